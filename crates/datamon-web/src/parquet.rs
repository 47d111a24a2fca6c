//! Parquet previews: a file's schema and first rows, read through the library's [`Vfs`] with
//! range reads (the footer, then the pages of the first rows), so a preview of a large file
//! fetches and verifies only those chunks, never the whole file.

use std::io::Read;

use bytes::Bytes;
use datamon::vfs::Vfs;
use parquet::basic::{ConvertedType, LogicalType};
use parquet::errors::ParquetError;
use parquet::file::reader::{ChunkReader, FileReader, Length, SerializedFileReader};
use parquet::record::Field;
use parquet::schema::types::Type;
use serde_json::{json, Value};

/// The largest footer (file metadata) read: beyond it the file is refused, not read.
const MAX_FOOTER: usize = 16 << 20;
/// The largest single read (a page) a preview makes: a file that asks for more (a damaged or
/// hostile page header) is refused instead of filling memory.
const MAX_READ: usize = 256 << 20;
/// Columns shown.
const MAX_COLUMNS: usize = 200;
/// Characters of one cell shown.
const MAX_CELL: usize = 200;

/// An open file of a bundle as Parquet reads it: random access by range, through the `Vfs`
/// (every byte verified against its chunk's hash).
struct VfsFile {
    vfs: Vfs,
    fh: u64,
    size: u64,
}

impl Drop for VfsFile {
    fn drop(&mut self) {
        self.vfs.release(self.fh);
    }
}

impl Length for VfsFile {
    fn len(&self) -> u64 {
        self.size
    }
}

fn read_at(vfs: &Vfs, fh: u64, offset: u64, len: usize) -> parquet::errors::Result<Bytes> {
    let out = crate::files::read_span(vfs, fh, offset, len as u64)
        .map_err(|e| ParquetError::External(Box::new(e)))?;
    if out.len() < len {
        return Err(ParquetError::EOF(format!(
            "{len} bytes at {offset} are past the end of the file"
        )));
    }
    Ok(out.into())
}

impl ChunkReader for VfsFile {
    type T = VfsRead;

    fn get_read(&self, start: u64) -> parquet::errors::Result<VfsRead> {
        Ok(VfsRead {
            vfs: self.vfs.clone(),
            fh: self.fh,
            at: start,
            size: self.size,
        })
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        let end = start.saturating_add(length as u64);
        if length > MAX_FOOTER && end >= self.size.saturating_sub(8) {
            return Err(ParquetError::General(format!(
                "a footer of {length} bytes: more than a preview reads"
            )));
        }
        if length > MAX_READ || end > self.size {
            return Err(ParquetError::General(format!(
                "a read of {length} bytes at {start} in a file of {}: damaged, or more than a \
                 preview reads",
                self.size
            )));
        }
        read_at(&self.vfs, self.fh, start, length)
    }
}

/// A sequential reader from an offset of a [`VfsFile`] (its handle stays open while the
/// `VfsFile` lives).
struct VfsRead {
    vfs: Vfs,
    fh: u64,
    at: u64,
    size: u64,
}

impl Read for VfsRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.at >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let want = u32::try_from(buf.len()).unwrap_or(u32::MAX).min(1 << 20);
        let b = self
            .vfs
            .read_blocking(self.fh, self.at, want)
            .map_err(std::io::Error::other)?;
        buf[..b.len()].copy_from_slice(&b);
        self.at += b.len() as u64;
        Ok(b.len())
    }
}

/// The type of a column as a reader of the file would name it: the physical type, and the
/// logical one when there is one (`INT64 (timestamp[us])`, `BYTE_ARRAY (string)`), or the
/// logical type of a group (`list`, `map`).
fn type_name(t: &Type) -> String {
    let info = t.get_basic_info();
    let logical = match info.logical_type_ref() {
        Some(l) => Some(logical_name(l)),
        None => match info.converted_type() {
            ConvertedType::NONE => None,
            c => Some(c.to_string().to_lowercase()),
        },
    };
    if t.is_group() {
        return logical.unwrap_or_else(|| "group".into());
    }
    let physical = format!("{:?}", t.get_physical_type());
    match logical {
        Some(l) => format!("{physical} ({l})"),
        None => physical,
    }
}

fn logical_name(l: &LogicalType) -> String {
    use parquet::basic::TimeUnit;
    let unit = |u: &TimeUnit| match u {
        TimeUnit::MILLIS => "ms",
        TimeUnit::MICROS => "us",
        TimeUnit::NANOS => "ns",
    };
    match l {
        LogicalType::String => "string".into(),
        LogicalType::Timestamp(t) => format!(
            "timestamp[{}{}]",
            unit(&t.unit),
            if t.is_adjusted_to_u_t_c { ", UTC" } else { "" }
        ),
        LogicalType::Time(t) => format!("time[{}]", unit(&t.unit)),
        LogicalType::Decimal(d) => format!("decimal({}, {})", d.precision, d.scale),
        LogicalType::Integer(i) => {
            format!("{}int{}", if i.is_signed { "" } else { "u" }, i.bit_width)
        }
        other => format!("{other:?}").to_lowercase(),
    }
}

fn cell(s: String) -> String {
    if s.chars().count() <= MAX_CELL {
        s
    } else {
        let mut t: String = s.chars().take(MAX_CELL).collect();
        t.push('…');
        t
    }
}

/// The preview of Parquet file `ino` (of `size` bytes): `schema` (name and type of each
/// top-level column), `rows` (the column names, then up to `max_rows` rows as text),
/// `num_rows`, `row_groups`, `truncated`. A file that is not Parquet, or is damaged, gives a
/// message for the page, not an error: the download still works.
pub(crate) fn preview(vfs: &Vfs, ino: u64, size: u64, max_rows: usize) -> datamon::Result<Value> {
    let fh = vfs.open_blocking(ino)?;
    let file = VfsFile {
        vfs: vfs.clone(),
        fh,
        size,
    };
    let unreadable = |e: ParquetError| {
        let why = match e.to_string() {
            s if s.contains("Disabled feature") => format!(
                "its pages use a compression this preview does not read (it reads snappy, zstd \
                 and lz4): {s}"
            ),
            s => format!("not a Parquet file this preview can read ({s})"),
        };
        json!({"preview": "unsupported", "reason": format!("{why}; download it")})
    };
    let reader = match SerializedFileReader::new(file) {
        Ok(r) => r,
        Err(e) => return Ok(unreadable(e)),
    };
    let meta = reader.metadata().file_metadata();
    let fields = meta.schema().get_fields();
    let schema: Vec<Value> = fields
        .iter()
        .take(MAX_COLUMNS)
        .map(|f| json!({"name": f.name(), "type": type_name(f)}))
        .collect();
    let num_rows = meta.num_rows();
    let row_groups = reader.metadata().num_row_groups();
    let mut rows: Vec<Vec<String>> = vec![fields
        .iter()
        .take(MAX_COLUMNS)
        .map(|f| f.name().to_owned())
        .collect()];
    let iter = match reader.get_row_iter(None) {
        Ok(i) => i,
        Err(e) => return Ok(unreadable(e)),
    };
    for row in iter.take(max_rows) {
        let row = match row {
            Ok(r) => r,
            Err(e) => return Ok(unreadable(e)),
        };
        rows.push(
            row.get_column_iter()
                .take(MAX_COLUMNS)
                .map(|(_, v)| {
                    cell(match v {
                        Field::Str(s) => s.clone(),
                        // Shown as Rust writes them (the record API writes 0 as "0E0").
                        Field::Double(d) => d.to_string(),
                        Field::Float(f) => f.to_string(),
                        v => v.to_string(),
                    })
                })
                .collect(),
        );
    }
    let shown = rows.len() - 1;
    Ok(json!({
        "preview": "parquet",
        "schema": schema,
        "rows": rows,
        "num_rows": num_rows,
        "row_groups": row_groups,
        "columns": fields.len(),
        "truncated": (shown as i64) < num_rows || fields.len() > MAX_COLUMNS,
    }))
}

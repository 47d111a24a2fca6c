//! A line diff for small text files: the common prefix and suffix are trimmed, the middle is
//! compared by longest common subsequence (bounded), else shown as removed then added.

/// The largest middle part (lines of `a` times lines of `b`) compared line by line.
const MAX_CELLS: usize = 4_000_000;

/// `' '` kept, `'-'` only in `a`, `'+'` only in `b`, with each line (without its newline).
pub(crate) fn diff_lines<'a>(a: &'a str, b: &'a str) -> Vec<(char, &'a str)> {
    let xa: Vec<&str> = a.lines().collect();
    let xb: Vec<&str> = b.lines().collect();
    let pre = xa.iter().zip(&xb).take_while(|(x, y)| x == y).count();
    let suf = xa[pre..]
        .iter()
        .rev()
        .zip(xb[pre..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (ma, mb) = (&xa[pre..xa.len() - suf], &xb[pre..xb.len() - suf]);
    let mut out: Vec<(char, &str)> = xa[..pre].iter().map(|l| (' ', *l)).collect();
    if ma.len().saturating_mul(mb.len()) > MAX_CELLS {
        out.extend(ma.iter().map(|l| ('-', *l)));
        out.extend(mb.iter().map(|l| ('+', *l)));
    } else {
        // lcs[i][j]: the longest common subsequence of ma[i..] and mb[j..].
        let w = mb.len() + 1;
        let mut lcs = vec![0u32; (ma.len() + 1) * w];
        for i in (0..ma.len()).rev() {
            for j in (0..mb.len()).rev() {
                lcs[i * w + j] = if ma[i] == mb[j] {
                    lcs[(i + 1) * w + j + 1] + 1
                } else {
                    lcs[(i + 1) * w + j].max(lcs[i * w + j + 1])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < ma.len() && j < mb.len() {
            if ma[i] == mb[j] {
                out.push((' ', ma[i]));
                i += 1;
                j += 1;
            } else if lcs[(i + 1) * w + j] >= lcs[i * w + j + 1] {
                out.push(('-', ma[i]));
                i += 1;
            } else {
                out.push(('+', mb[j]));
                j += 1;
            }
        }
        out.extend(ma[i..].iter().map(|l| ('-', *l)));
        out.extend(mb[j..].iter().map(|l| ('+', *l)));
    }
    out.extend(xa[xa.len() - suf..].iter().map(|l| (' ', *l)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_diffs() {
        let d = diff_lines("a\nb\nc\nd\n", "a\nc\nx\nd\n");
        assert_eq!(
            d,
            [(' ', "a"), ('-', "b"), (' ', "c"), ('+', "x"), (' ', "d")]
        );
        assert_eq!(diff_lines("", "n"), [('+', "n")]);
        assert_eq!(diff_lines("same", "same"), [(' ', "same")]);
    }
}

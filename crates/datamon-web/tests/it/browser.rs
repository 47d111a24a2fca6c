//! The UI in a real browser: headless Chromium driven over the DevTools protocol on a pipe
//! (`--remote-debugging-pipe`: JSON messages ended by NUL on the browser's fds 3 and 4), with
//! no driver library. Loads each page, checks the rendered DOM, follows links and clicks.
//!
//! Chromium: `chromium` on `PATH` or `$DATAMON_TEST_CHROMIUM`. When missing, the test prints
//! that it is skipped, or fails when `DATAMON_TEST_REQUIRE` names `chromium`.
//! With `DATAMON_WEB_SCREENSHOTS=DIR`, screenshots of the main pages are written to `DIR`.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::{fixture, required, Fixture, HOSTILE_MESSAGE, HOSTILE_NAME};

fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("DATAMON_TEST_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|d| ["chromium", "chromium-browser"].map(|n| d.join(n)))
        .find(|p| p.is_file())
}

/// A browser and one page (a flattened session) in it.
struct Browser {
    child: Child,
    to: ChildStdin,
    from: mpsc::Receiver<Value>,
    next_id: u64,
    session: Option<String>,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    fn launch(exe: &std::path::Path) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        // fd 3 reads our commands (stdin of the shell), fd 4 writes replies (its stdout).
        let script = "exec \"$0\" \"$@\" 3<&0 4>&1 0</dev/null 1>/dev/null";
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(exe)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--remote-debugging-pipe",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let to = child.stdin.take().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, from) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(out);
            loop {
                let mut buf = Vec::new();
                match r.read_until(0, &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                buf.pop();
                if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            }
        });
        let mut b = Browser {
            child,
            to,
            from,
            next_id: 0,
            session: None,
            _profile: profile,
        };
        let t = b.call("Target.createTarget", json!({ "url": "about:blank" }));
        let target = t["targetId"].as_str().unwrap().to_owned();
        let s = b.call(
            "Target.attachToTarget",
            json!({ "targetId": target, "flatten": true }),
        );
        b.session = Some(s["sessionId"].as_str().unwrap().to_owned());
        b.call("Page.enable", json!({}));
        b.call("Runtime.enable", json!({}));
        b
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = &self.session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes).unwrap();
        self.to.flush().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self
                .from
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no answer to {method}"));
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {}", v["error"]);
                return v["result"].clone();
            }
        }
    }

    /// Evaluates `expr` in the page (awaiting a promise), returning its JSON value.
    fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }),
        );
        assert!(
            r.get("exceptionDetails").is_none(),
            "{expr}: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    /// Waits until the page says it has rendered (`body[data-ready=1]`).
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.eval("!!document.body && document.body.dataset.ready === '1'") == json!(true) {
                return;
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        panic!(
            "the page never rendered: {}",
            self.eval("document.body ? document.body.innerText : ''")
        );
    }

    fn goto(&mut self, url: &str) {
        self.eval("document.body && (document.body.dataset.ready = 'stale'); 0");
        self.call("Page.navigate", json!({ "url": url }));
        self.wait_ready();
    }

    /// Clicks the first element matching `selector` (whose text contains `text`) and waits.
    fn click(&mut self, selector: &str, text: &str) {
        let found = self.eval(&format!(
            "(() => {{ const e = [...document.querySelectorAll({s})].find(e => e.textContent.includes({t})); \
               if (!e) return false; e.dispatchEvent(new MouseEvent('click', {{bubbles: true, cancelable: true, button: 0}})); return true; }})()",
            s = json!(selector),
            t = json!(text)
        ));
        assert_eq!(
            found,
            json!(true),
            "nothing matches {selector} with {text:?}"
        );
        self.wait_ready();
    }

    fn texts(&mut self, selector: &str) -> Vec<String> {
        let v = self.eval(&format!(
            "JSON.stringify([...document.querySelectorAll({})].map(e => e.textContent))",
            json!(selector)
        ));
        serde_json::from_str(v.as_str().unwrap()).unwrap()
    }

    fn path(&mut self) -> String {
        self.eval("location.pathname + location.search")
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn screenshot(&mut self, name: &str) {
        let Some(dir) = std::env::var_os("DATAMON_WEB_SCREENSHOTS") else {
            return;
        };
        let r = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let png = base64_decode(r["data"].as_str().unwrap());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(PathBuf::from(dir).join(format!("{name}.png")), png).unwrap();
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=' && c != b'\n').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= u32::from(val(c)) << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

fn check_pages(b: &mut Browser, f: &Fixture) {
    // Repos, then click through to a repo's timeline.
    b.goto(&f.at("/"));
    assert_eq!(b.texts("#title"), ["Repos"]);
    assert_eq!(
        b.texts(".repo-row .repo-link"),
        ["hostile", "images", "models"]
    );
    assert!(b
        .texts(".repo-row td")
        .contains(&"training images".to_owned()));
    b.screenshot("repos");
    b.click(".repo-link", "images");
    assert_eq!(b.path(), "/repos/images");
    assert_eq!(
        b.texts(".bundle-row .bundle-link"),
        ["second version", "first version"]
    );
    assert_eq!(b.texts(".bundle-row .tag.label"), ["prod"]);
    assert_eq!(b.texts(".bundle-row .tag.branch"), ["main"]);
    b.screenshot("bundles");

    // The file browser: a bundle, a directory, a text preview.
    b.click(".bundle-link", "first version");
    assert_eq!(b.path(), format!("/repos/images/bundles/{}", f.b1));
    assert_eq!(
        b.texts(".entry-row .entry-link"),
        [
            "a.txt",
            "big.bin",
            "cfg.json",
            "data.csv",
            "dir/",
            "pixel.png"
        ]
    );
    b.screenshot("files");
    b.click(".entry-link", "dir/");
    b.click(".entry-link", "sub/");
    assert_eq!(
        b.path(),
        format!("/repos/images/bundles/{}/files/dir/sub", f.b1)
    );
    b.click(".entry-link", "deep.txt");
    assert_eq!(b.texts("pre.preview"), ["deep\n"]);
    // Previews by stable URL: CSV as a table, JSON pretty, an image inline.
    b.goto(&f.at(&format!("/repos/images/bundles/{}/files/data.csv", f.b1)));
    assert_eq!(b.texts("table.csv th"), ["name", "count"]);
    assert_eq!(b.texts("table.csv td"), ["x, y", "1", "z", "2"]);
    b.goto(&f.at(&format!("/repos/images/bundles/{}/files/cfg.json", f.b1)));
    assert!(b.texts("pre.json")[0].contains("\"b\": ["));
    b.goto(&f.at(&format!("/repos/images/bundles/{}/files/pixel.png", f.b1)));
    let loaded = b.eval(
        "new Promise(r => { const i = document.querySelector('img.preview'); \
         if (i.complete) r(i.naturalWidth); else i.onload = () => r(i.naturalWidth); })",
    );
    assert_eq!(loaded, json!(1), "the image loads and decodes");
    // Parquet: schema and first rows.
    b.goto(&f.at(&format!(
        "/repos/models/bundles/{}/files/metrics.parquet",
        f.m2
    )));
    assert_eq!(b.texts("table.schema td")[..2], ["id", "INT64"]);
    assert_eq!(b.texts("table.rows th"), ["id", "name", "score"]);
    assert_eq!(b.texts("table.rows td")[..2], ["0", "row-0"]);
    assert!(b.texts(".parquet .counts")[0].starts_with("250 rows in 2 row groups"));
    b.screenshot("parquet");

    // Diff with the parent, then a text diff.
    b.goto(&f.at(&format!("/repos/images/bundles/{}", f.b2)));
    b.click("a.diff-parent", "Diff with parent");
    assert_eq!(b.path(), format!("/repos/images/diff/{}/{}", f.b1, f.b2));
    assert_eq!(
        b.texts(".change-row .change-link"),
        ["a.txt", "cfg.json", "new.txt"]
    );
    assert_eq!(b.texts(".change-row .change"), ["M", "D", "A"]);
    b.eval("document.querySelector('.change-row .show-text-diff').click(); 0");
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.texts(".diff-line").is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(30));
    }
    assert_eq!(b.texts(".diff-line"), ["  hello", "+ there", "  world"]);
    assert_eq!(b.texts(".diff-line.op-add"), ["+ there"]);
    b.screenshot("diff");

    // Labels and their history.
    b.goto(&f.at("/repos/images/labels"));
    b.click(".label-link", "prod");
    assert_eq!(b.path(), "/repos/images/labels/prod");
    assert_eq!(b.texts(".history-row").len(), 2);

    // Runs, a run, its diff with the previous one, and the lineage graph, clicked through.
    b.goto(&f.at("/runs"));
    assert_eq!(b.texts(".run-row .step-link"), ["train", "train"]);
    b.click(".run-row .run-link", &f.run2.to_string()[..10]);
    assert_eq!(b.path(), format!("/runs/{}", f.run2));
    assert!(b.texts("dd").contains(&"0123456789abcdef".to_owned()));
    assert_eq!(b.texts("table.params td"), ["lr", "0.2"]);
    assert_eq!(b.texts("table.metrics td"), ["accuracy", "0.9"]);
    b.screenshot("run");
    b.click("a.diff-prev", "Diff");
    assert_eq!(b.path(), format!("/runs/{}/diff/{}", f.run, f.run2));
    assert_eq!(b.texts("table.values tr.changed td"), ["lr", "0.1", "0.2"]);
    assert!(b.texts(".verdict")[0].contains("differ"));
    b.goto(&f.at(&format!("/repos/models/bundles/{}/lineage", f.m1)));
    let nodes = b.texts("svg.lineage .lineage-node .node-label");
    assert!(nodes.contains(&"images".to_owned()), "{nodes:?}");
    assert!(nodes.contains(&"run train".to_owned()), "{nodes:?}");
    assert!(nodes.contains(&"models".to_owned()), "{nodes:?}");
    assert_eq!(
        b.eval("document.querySelectorAll('svg.lineage path.edge').length"),
        json!(2)
    );
    b.screenshot("lineage");
    b.click("svg.lineage a.lineage-node", "run train");
    assert_eq!(b.path(), format!("/runs/{}", f.run));
    b.click("a.lineage-link", "Lineage");
    assert_eq!(b.path(), format!("/runs/{}/lineage", f.run));
    b.click("svg.lineage a.lineage-node", "images");
    assert_eq!(b.path(), format!("/repos/images/bundles/{}", f.b1));

    // Back and forward work on the stable URLs.
    b.eval("history.back(); 0");
    b.wait_ready();
    assert_eq!(b.path(), format!("/runs/{}/lineage", f.run));

    // Hostile names are shown as written and never run.
    b.goto(&f.at("/repos/hostile"));
    assert_eq!(b.texts(".bundle-link"), [HOSTILE_MESSAGE]);
    assert_eq!(b.texts(".description"), ["<b>bold</b> description"]);
    b.click(".bundle-link", "<script>");
    assert_eq!(b.texts(".entry-link")[0], HOSTILE_NAME);
    b.click(".entry-link", "<img");
    assert_eq!(
        b.texts("pre.preview"),
        ["<script>window.__pwned=3</script>\n"]
    );
    assert_eq!(
        b.eval("typeof window.__pwned"),
        json!("undefined"),
        "no injected script ran"
    );
    assert_eq!(
        b.eval("document.querySelectorAll('main img, main script, main b').length"),
        json!(0)
    );

    // Errors render with their status.
    b.goto(&f.at("/repos/nope"));
    assert_eq!(
        b.eval("document.querySelector('.error').dataset.status"),
        json!("404")
    );
    b.goto(&f.at("/no/such/page"));
    assert!(b.texts(".error")[0].contains("No such page"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_render_and_link_in_chromium() {
    let Some(exe) = chromium() else {
        assert!(
            !required("chromium"),
            "chromium is required (DATAMON_TEST_REQUIRE) but is not on PATH (apt-get install chromium)"
        );
        eprintln!("skipping the browser test: chromium is not on PATH (with DATAMON_TEST_REQUIRE=chromium this is a failure)");
        return;
    };
    let f = fixture().await;
    // The browser is driven from a plain thread; the server keeps running on the runtime.
    let f = std::sync::Arc::new(f);
    let f2 = f.clone();
    tokio::task::spawn_blocking(move || {
        let mut b = Browser::launch(&exe);
        check_pages(&mut b, &f2);
    })
    .await
    .unwrap();
    drop(f);
}

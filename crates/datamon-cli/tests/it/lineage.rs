//! Runs and lineage, end to end through the binary: `run exec/record/list/get/diff`,
//! `bundle lineage`, `log`, `bundle list --where/--since`.
#![allow(clippy::unwrap_used)] // test helpers

use std::path::PathBuf;

use assert_cmd::Command;
use serde_json::Value;

/// One isolated datamon installation: its own home (and embedded store) and working folder.
struct Env {
    _tmp: tempfile::TempDir,
    home: PathBuf,
    work: PathBuf,
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Env {
    fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        let work = tmp.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        Env {
            home,
            work,
            _tmp: tmp,
        }
    }

    fn cmd(&self, args: &[&str]) -> Out {
        let mut c = Command::cargo_bin("datamon").unwrap();
        for k in [
            "DATAMON_STORE",
            "DATAMON_CONTEXT",
            "DATAMON_JSON",
            "DATAMON_QUIET",
            "DATAMON_METRICS",
            "DATAMON_IMAGE",
        ] {
            c.env_remove(k);
        }
        let out = c
            .env("DATAMON_HOME", &self.home)
            .env("USER", "tester")
            .current_dir(&self.work)
            .args(args)
            .output()
            .unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.cmd(args);
        assert_eq!(o.code, 0, "{args:?} failed: {}\n{}", o.stderr, o.stdout);
        o.stdout
    }

    fn json(&self, args: &[&str]) -> Vec<Value> {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let o = self.cmd(&a);
        assert!(o.code == 0 || o.code == 1, "{args:?} failed: {}", o.stderr);
        o.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn write(&self, rel: &str, content: &str) {
        let p = self.work.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    fn upload(&self, repo: &str, dir: &str, msg: &str) -> String {
        let out = self.ok(&[
            "-q",
            "bundle",
            "upload",
            "--repo",
            repo,
            "--path",
            dir,
            "--message",
            msg,
            "--label",
            "latest",
        ]);
        last_id(&out, "Uploaded bundle id:")
    }

    fn runs(&self, args: &[&str]) -> Vec<Value> {
        let mut a = vec!["run", "list"];
        a.extend_from_slice(args);
        self.json(&a)
    }
}

fn last_id(out: &str, prefix: &str) -> String {
    let id = out
        .lines()
        .last()
        .and_then(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in {out:?}"))
        .to_owned();
    assert_eq!(id.len(), 27, "{id}");
    id
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap()
}

/// One pass of the pipeline: prepare -> train -> evaluate. Returns the three run ids.
fn pipeline(env: &Env, lr: &str) -> [String; 3] {
    let q = |args: &[&str]| {
        let mut a = vec!["-q", "run", "exec"];
        a.extend_from_slice(args);
        last_id(&env.ok(&a), "Recorded run id:")
    };
    let _ = std::fs::remove_dir_all(env.work.join("out"));
    let prepare = q(&[
        "--step",
        "prepare",
        "--input",
        "raw@latest",
        "--output",
        "prepared:out/prepared",
        "--",
        "sh",
        "-c",
        "for f in \"$DATAMON_INPUT_RAW\"/*.csv; do tr a-z A-Z < \"$f\" > {output:prepared}/$(basename \"$f\"); done",
    ]);
    let train = q(&[
        "--step",
        "train",
        "--input",
        "prepared@main",
        "--param",
        &format!("lr={lr}"),
        "--param",
        "epochs=3",
        "--output",
        "model:out/model",
        "--",
        "sh",
        "-c",
        "cat {input:prepared}/*.csv > $DATAMON_OUTPUT_MODEL/model.txt; echo lr=$DATAMON_PARAM_LR >> $DATAMON_OUTPUT_MODEL/model.txt; echo '{\"loss\": {\"train\": 0.5}}' > \"$DATAMON_METRICS\"",
    ]);
    let evaluate = q(&[
        "--step",
        "evaluate",
        "--input",
        "model@main:model.txt",
        "--output",
        "eval:out/eval",
        "--",
        "sh",
        "-c",
        "wc -c < \"$DATAMON_INPUT_MODEL\" > $DATAMON_OUTPUT_EVAL/score.txt; echo \"{\\\"score\\\": $(wc -c < \"$DATAMON_INPUT_MODEL\")}\" > \"$DATAMON_METRICS\"",
    ]);
    [prepare, train, evaluate]
}

fn setup(env: &Env) {
    for r in ["raw", "prepared", "model", "eval"] {
        env.ok(&["repo", "create", "--repo", r, "--description", r]);
    }
}

#[test]
fn pipeline_twice_run_diff_and_lineage_show_exactly_the_changes() {
    let env = Env::new();
    setup(&env);
    env.write("raw/a.csv", "x,1\n");
    env.write("raw/b.csv", "y,2\n");
    let raw1 = env.upload("raw", "raw", "raw v1");
    let [p1, t1, e1] = pipeline(&env, "0.1");

    env.write("raw/b.csv", "y,3\n");
    let raw2 = env.upload("raw", "raw", "raw v2");
    let [p2, t2, e2] = pipeline(&env, "0.2");

    // The runs are recorded with their inputs, outputs, params and metrics.
    let runs = env.runs(&[]);
    assert_eq!(runs.len(), 6);
    assert!(runs.iter().all(|r| r["status"] == "succeeded"));
    assert_eq!(env.runs(&["--step", "train"]).len(), 2);
    let t1_run = &env.json(&["run", "get", &t1])[0];
    assert_eq!(t1_run["params"]["lr"], "0.1");
    assert_eq!(t1_run["metrics"]["loss.train"], 0.5);
    assert_eq!(t1_run["user"], "tester");
    assert_eq!(t1_run["inputs"][0]["repo"], "prepared");
    assert_eq!(t1_run["outputs"][0]["repo"], "model");

    // prepare: only the raw input changed, by exactly one file.
    let d = &env.json(&["run", "diff", &p1, &p2])[0];
    assert_eq!(d["code_changed"], false);
    assert!(d["params"].as_array().unwrap().is_empty());
    assert_eq!(d["inputs"].as_array().unwrap().len(), 1);
    assert_eq!(d["inputs"][0]["repo"], "raw");
    assert_eq!(d["inputs"][0]["a"], raw1.as_str());
    assert_eq!(d["inputs"][0]["b"], raw2.as_str());
    assert_eq!(
        d["inputs"][0]["changes"],
        serde_json::json!([{"path": "b.csv", "kind": "M"}])
    );
    assert_eq!(
        d["outputs"][0]["changes"],
        serde_json::json!([{"path": "b.csv", "kind": "M"}])
    );

    // train: the prepared input changed by one file, and the one parameter changed.
    let d = &env.json(&["run", "diff", &t1, &t2])[0];
    let changed: Vec<(&str, &Value, &Value)> = d["params"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["changed"] == true)
        .map(|p| (s(&p["key"]), &p["a"], &p["b"]))
        .collect();
    assert_eq!(
        changed,
        vec![("lr", &Value::from("0.1"), &Value::from("0.2"))]
    );
    assert_eq!(
        d["params"].as_array().unwrap().len(),
        2,
        "epochs is listed, unchanged"
    );
    assert_eq!(
        d["inputs"][0]["changes"],
        serde_json::json!([{"path": "b.csv", "kind": "M"}])
    );
    assert_eq!(d["code_changed"], false);
    assert!(d["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["changed"] == false));

    // The human diff, side by side; exit 1 because the runs differ.
    let o = env.cmd(&["run", "diff", &t1, &t2]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    let line = |prefix: &str| {
        o.stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{}", o.stdout))
            .to_owned()
    };
    assert!(line("param lr").contains("0.1") && line("param lr").ends_with("changed"));
    assert!(line("param epochs").ends_with("same"));
    assert!(line("input prepared").contains("changed: 1 paths"));
    assert!(o.stdout.contains("M b.csv"), "{}", o.stdout);
    assert!(line("code").ends_with("same"));

    // evaluate: same parameters, only the model input differs (one file).
    let d = &env.json(&["run", "diff", &e1, &e2])[0];
    assert_eq!(d["inputs"][0]["key"], "model:model.txt");
    assert_eq!(
        d["inputs"][0]["changes"],
        serde_json::json!([{"path": "model.txt", "kind": "M"}])
    );

    // A run compared with itself: nothing differs, exit 0.
    let o = env.cmd(&["run", "diff", &t2, &t2]);
    assert_eq!(o.code, 0, "{}", o.stdout);

    // Lineage of the second evaluation, upstream: evaluate <- model <- train <- prepared <-
    // prepare <- raw v2, and nothing of the first pass.
    let eval2 = s(&env.json(&["run", "get", &e2])[0]["outputs"][0]["bundle"]).to_owned();
    let l = &env.json(&[
        "bundle",
        "lineage",
        "--repo",
        "eval",
        "--bundle",
        &eval2,
        "--upstream",
    ])[0];
    let mut run_ids: Vec<&str> = l["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| s(&r["id"]))
        .collect();
    run_ids.sort();
    let mut want = vec![p2.as_str(), t2.as_str(), e2.as_str()];
    want.sort();
    assert_eq!(run_ids, want);
    let bundles: Vec<String> = l["bundles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| format!("{}@{}", s(&b["repo"]), s(&b["id"])))
        .collect();
    assert_eq!(bundles.len(), 4, "{bundles:?}");
    assert!(bundles.contains(&format!("raw@{raw2}")));
    assert!(!bundles.contains(&format!("raw@{raw1}")));
    assert_eq!(l["edges"].as_array().unwrap().len(), 6);

    // Text: the chain with the changed parameter.
    let text = env.ok(&["bundle", "lineage", "--repo", "eval", "--bundle", &eval2]);
    assert!(text.contains("upstream:"), "{text}");
    assert!(text.contains(&format!("run {t2} step train")), "{text}");
    assert!(text.contains("lr=0.2"), "{text}");
    assert!(text.contains(&format!("raw@{raw2}")), "{text}");
    assert!(text.contains("(no recorded run read it)"), "{text}");

    // Depth 1: only the producing run and its direct input.
    let l = &env.json(&[
        "bundle",
        "lineage",
        "--repo",
        "eval",
        "--bundle",
        &eval2,
        "--upstream",
        "--depth",
        "1",
    ])[0];
    assert_eq!(l["runs"].as_array().unwrap().len(), 1);
    assert_eq!(l["runs"][0]["id"], e2.as_str());

    // Downstream of raw v1: the first pass only.
    let l = &env.json(&[
        "bundle",
        "lineage",
        "--repo",
        "raw",
        "--bundle",
        &raw1,
        "--downstream",
    ])[0];
    let mut run_ids: Vec<&str> = l["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| s(&r["id"]))
        .collect();
    run_ids.sort();
    let mut want = vec![p1.as_str(), t1.as_str(), e1.as_str()];
    want.sort();
    assert_eq!(run_ids, want);

    // DOT and Mermaid name every run.
    let dot = env.ok(&[
        "bundle", "lineage", "--repo", "raw", "--bundle", &raw1, "--format", "dot",
    ]);
    assert!(dot.starts_with("digraph lineage {"), "{dot}");
    assert!(dot.contains(&format!("\"r:{t1}\"")), "{dot}");
    let mm = env.ok(&[
        "bundle", "lineage", "--repo", "raw", "--bundle", &raw1, "--format", "mermaid",
    ]);
    assert!(mm.starts_with("flowchart LR"), "{mm}");
    assert!(mm.contains(&format!("r_{e1}")), "{mm}");

    // The model branch log: newest first, each bundle with its producing run.
    let log = env.json(&["log", "--repo", "model"]);
    assert_eq!(log.len(), 2);
    assert_eq!(log[0]["run"], t2.as_str());
    assert_eq!(log[1]["run"], t1.as_str());
    let text = env.ok(&["log", "--repo", "model", "-n", "1"]);
    assert!(text.contains(&format!("Run:    {t2} (train)")), "{text}");
    assert!(!text.contains(&t1), "{text}");

    // Bundles are queryable by metadata and time.
    let found = env.json(&[
        "bundle",
        "list",
        "--repo",
        "model",
        "--where",
        &format!("meta.datamon.run={t1}"),
    ]);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["meta"]["datamon.step"], "train");
    assert_eq!(
        env.json(&["bundle", "list", "--repo", "model", "--since", "2000-01-01"])
            .len(),
        2
    );
    assert!(env
        .json(&["bundle", "list", "--repo", "model", "--since", "2999-01-01"])
        .is_empty());
    assert_eq!(env.runs(&["--since", "1h"]).len(), 6);
    assert!(env.runs(&["--since", "2999-01-01"]).is_empty());
}

#[test]
fn failed_command_records_a_failed_run_and_uploads_nothing() {
    let env = Env::new();
    setup(&env);
    env.write("raw/a.csv", "a\n");
    env.upload("raw", "raw", "v1");
    let o = env.cmd(&[
        "run",
        "exec",
        "--step",
        "train",
        "--input",
        "raw@latest",
        "--param",
        "lr=1",
        "--output",
        "model:out/m",
        "--",
        "sh",
        "-c",
        "echo partial > $DATAMON_OUTPUT_MODEL/m.txt; exit 3",
    ]);
    assert_eq!(o.code, 3, "{}", o.stderr);
    assert!(o.stderr.contains("exit status 3"), "{}", o.stderr);
    let runs = env.runs(&[]);
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["status"], "failed");
    assert_eq!(runs[0]["exit_code"], 3);
    assert_eq!(runs[0]["params"]["lr"], "1");
    assert!(runs[0]["outputs"].as_array().unwrap().is_empty());
    assert_eq!(runs[0]["inputs"].as_array().unwrap().len(), 1);
    assert!(env.ok(&["bundle", "list", "--repo", "model"]).is_empty());
    let text = env.ok(&["run", "get", s(&runs[0]["id"])]);
    assert!(text.contains("failed (exit 3)"), "{text}");
}

fn assert_nothing_recorded(env: &Env) {
    assert!(env.runs(&[]).is_empty());
    assert!(env.ok(&["bundle", "list", "--repo", "model"]).is_empty());
}

#[test]
fn bad_input_is_refused_before_anything_is_recorded() {
    let env = Env::new();
    setup(&env);
    env.write("raw/a.csv", "a\n");
    env.upload("raw", "raw", "v1");
    let exec = |extra: &[&str], command: &[&str]| {
        let mut a = vec!["run", "exec", "--step", "s"];
        a.extend_from_slice(extra);
        a.push("--");
        a.extend_from_slice(command);
        env.cmd(&a)
    };
    let marker = env.work.join("ran");
    let touch = ["sh", "-c", "touch ran"];

    // A command that is not found.
    let o = exec(
        &["--input", "raw@latest", "--output", "model:out/m"],
        &["no-such-command-xyz"],
    );
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("command not found"), "{}", o.stderr);
    assert!(o.stderr.contains("no-such-command-xyz"), "{}", o.stderr);
    assert_nothing_recorded(&env);

    // Malformed selectors and outputs: usage errors.
    for bad in [
        ["--input", "raw@"],
        ["--input", "raw@not a label"],
        ["--input", "@latest"],
        ["--output", "model"],
        ["--output", "model:out/m@3MXPX4b8A4hskhBeh825gqhcqmQ"],
    ] {
        let o = exec(&bad, &touch);
        assert_eq!(o.code, 2, "{bad:?}: {}", o.stderr);
        assert!(
            o.stderr.contains("input") || o.stderr.contains("output"),
            "{bad:?}: {}",
            o.stderr
        );
    }
    assert!(!marker.exists());

    // Selectors and repos that do not exist: "not found".
    for bad in [
        ["--input", "raw@nope"],
        ["--input", "raw@3MXPX4b8A4hskhBeh825gqhcqmQ"],
        ["--input", "missing@latest"],
        ["--output", "missing:out/m"],
    ] {
        let o = exec(&bad, &touch);
        assert_eq!(o.code, 2, "{bad:?}: {}", o.stderr);
        assert!(
            o.stderr.contains("not found") || o.stderr.contains("no label"),
            "{bad:?}: {}",
            o.stderr
        );
    }
    assert!(!marker.exists());

    // An output that is a file, not a folder.
    env.write("out/file", "x");
    let o = exec(&["--output", "model:out/file"], &touch);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("is not a directory"), "{}", o.stderr);
    assert!(!marker.exists());

    // An output folder the command removes.
    let o = exec(
        &["--output", "model:out/gone"],
        &["sh", "-c", "rm -rf out/gone"],
    );
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("not a directory"), "{}", o.stderr);
    assert_nothing_recorded(&env);

    // Unknown and malformed run ids.
    let o = env.cmd(&["run", "get", "3MXPX4b8A4hskhBeh825gqhcqmQ"]);
    assert_eq!(o.code, 2);
    assert!(
        o.stderr
            .contains("run 3MXPX4b8A4hskhBeh825gqhcqmQ not found"),
        "{}",
        o.stderr
    );
    let o = env.cmd(&["run", "get", "nope"]);
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("invalid run id"), "{}", o.stderr);
    let o = env.cmd(&[
        "run",
        "diff",
        "3MXPX4b8A4hskhBeh825gqhcqmQ",
        "3MXPX4b8A4hskhBeh825gqhcqmR",
    ]);
    assert_eq!(o.code, 2);
    let o = env.cmd(&[
        "bundle",
        "lineage",
        "--repo",
        "raw",
        "--bundle",
        "3MXPX4b8A4hskhBeh825gqhcqmQ",
    ]);
    assert_eq!(o.code, 2);
    let o = env.cmd(&["bundle", "list", "--repo", "raw", "--where", "x=y"]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("meta.KEY=VALUE"), "{}", o.stderr);
}

#[test]
fn run_record_for_a_step_executed_elsewhere() {
    let env = Env::new();
    setup(&env);
    env.write("raw/a.csv", "a\n");
    let raw = env.upload("raw", "raw", "v1");
    env.write("m/model.bin", "weights");
    let model = env.upload("model", "m", "model from argo");
    std::fs::write(env.work.join("metrics.json"), r#"{"acc": 0.75}"#).unwrap();
    let out = env.ok(&[
        "run",
        "record",
        "--step",
        "train",
        "--input",
        &format!("raw@{raw}"),
        "--output",
        &format!("model@{model}"),
        "--param",
        "lr=0.3",
        "--git-commit",
        "abc123",
        "--image",
        "registry/train@sha256:0123",
        "--started",
        "2026-01-01T10:00:00Z",
        "--finished",
        "2026-01-01T11:00:00Z",
        "--metrics",
        "metrics.json",
        "--meta",
        "team=vision",
    ]);
    let id = last_id(&out, "Recorded run id:");
    let r = &env.json(&["run", "get", &id])[0];
    assert_eq!(r["git_commit"], "abc123");
    assert_eq!(r["image"], "registry/train@sha256:0123");
    assert_eq!(r["metrics"]["acc"], 0.75);
    assert_eq!(r["started_at"], "2026-01-01T10:00:00Z");
    let text = env.ok(&["run", "get", &id]);
    assert!(
        text.contains("git abc123, image registry/train@sha256:0123"),
        "{text}"
    );
    assert_eq!(env.runs(&["--where", "meta.team=vision"]).len(), 1);
    assert!(env.runs(&["--where", "meta.team=nlp"]).is_empty());
    let l = &env.json(&[
        "bundle",
        "lineage",
        "--repo",
        "model",
        "--bundle",
        &model,
        "--upstream",
    ])[0];
    assert_eq!(l["runs"][0]["id"], id.as_str());
    assert_eq!(env.json(&["log", "--repo", "model"])[0]["run"], id.as_str());

    // Outputs must exist.
    let o = env.cmd(&[
        "run",
        "record",
        "--step",
        "x",
        "--output",
        "model@3MXPX4b8A4hskhBeh825gqhcqmQ",
    ]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert_eq!(env.runs(&[]).len(), 1);
    // Times must make sense.
    let o = env.cmd(&[
        "run",
        "record",
        "--step",
        "x",
        "--started",
        "2026-01-02",
        "--finished",
        "2026-01-01",
    ]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stderr.contains("finish before"), "{}", o.stderr);
}

#[test]
fn code_version_is_captured_from_git_and_the_environment() {
    let env = Env::new();
    setup(&env);
    let git = |args: &[&str]| {
        let ok = std::process::Command::new("git")
            .args(args)
            .current_dir(&env.work)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@e")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@e")
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok
    };
    if !git(&["init", "-q"]) {
        eprintln!("git not available; skipping");
        return;
    }
    env.write("train.py", "print(1)\n");
    assert!(git(&["add", "train.py"]));
    assert!(git(&["commit", "-qm", "c"]));
    let head = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(&env.work)
        .output()
        .unwrap();
    let head = String::from_utf8(head.stdout).unwrap().trim().to_owned();
    let run = |dirty: bool| {
        if dirty {
            env.write("train.py", "print(2)\n");
        }
        let out = env.ok(&["-q", "run", "exec", "--step", "t", "--", "true"]);
        let id = last_id(&out, "Recorded run id:");
        env.json(&["run", "get", &id]).remove(0)
    };
    let clean = run(false);
    assert_eq!(clean["git_commit"], head.as_str());
    assert_eq!(clean["git_dirty"], false);
    let dirty = run(true);
    assert_eq!(dirty["git_dirty"], true);
    let d = &env.json(&["run", "diff", s(&clean["id"]), s(&dirty["id"])])[0];
    assert_eq!(d["code_changed"], true);
}

#[test]
fn inputs_params_and_run_id_reach_the_command() {
    let env = Env::new();
    setup(&env);
    env.write("raw/a.csv", "a\n");
    env.write("raw/sub/b.csv", "b\n");
    let raw = env.upload("raw", "raw", "v1");
    let out = env.ok(&[
        "run",
        "exec",
        "--step",
        "check",
        "--input",
        "raw",
        "--input",
        &format!("raw@{raw}:sub/b.csv"),
        "--param",
        "k=v 1",
        "--",
        "sh",
        "-c",
        "test -f \"$DATAMON_INPUT_RAW/a.csv\" && test \"$(cat \"$DATAMON_INPUT_RAW_2\")\" = b \
         && test \"$DATAMON_PARAM_K\" = \"$1\" && test -f {input:raw#2} \
         && echo \"$DATAMON_RUN_ID\" > id.txt && echo to-stdout",
        "sh",
        "{param:k}",
    ]);
    let id = last_id(&out, "Recorded run id:");
    assert_eq!(
        out.lines().count(),
        1,
        "the command's stdout goes to stderr: {out}"
    );
    let seen = std::fs::read_to_string(env.work.join("id.txt")).unwrap();
    assert_eq!(seen.trim(), id);
    let r = &env.json(&["run", "get", &id])[0];
    assert_eq!(r["inputs"][0]["bundle"], raw.as_str());
    assert_eq!(r["inputs"][1]["path"], "sub/b.csv");
    assert_eq!(r["params"]["k"], "v 1");
}

#[test]
fn outputs_go_to_the_named_branch_or_label() {
    let env = Env::new();
    setup(&env);
    env.ok(&["branch", "create", "--repo", "model", "--branch", "dev"]);
    let exec = |target: &str| {
        let out = env.ok(&[
            "-q",
            "run",
            "exec",
            "--step",
            "t",
            "--meta",
            "team=vision",
            "--output",
            &format!("model:out/m{target}"),
            "--",
            "sh",
            "-c",
            "date > $DATAMON_OUTPUT_MODEL/x",
        ]);
        let id = last_id(&out, "Recorded run id:");
        s(&env.json(&["run", "get", &id])[0]["outputs"][0]["bundle"]).to_owned()
    };
    let on_main = exec("");
    let on_dev = exec("@dev");
    let labelled = exec("@prod");
    let explicit = exec("@label:staging");
    let get = |args: &[&str]| {
        let mut a = vec!["bundle", "get", "--repo", "model"];
        a.extend_from_slice(args);
        s(&env.json(&a)[0]["id"]).to_owned()
    };
    assert_eq!(get(&["--branch", "dev"]), on_dev);
    assert_eq!(get(&["--label", "prod"]), labelled);
    assert_eq!(get(&["--label", "staging"]), explicit);
    assert_eq!(get(&["--branch", "main"]), explicit);
    let log: Vec<String> = env
        .json(&["log", "--repo", "model"])
        .iter()
        .map(|e| s(&e["id"]).to_owned())
        .collect();
    assert_eq!(log, vec![explicit.clone(), labelled.clone(), on_main]);
    let team = env.json(&[
        "bundle",
        "list",
        "--repo",
        "model",
        "--where",
        "meta.team=vision",
        "--where",
        "meta.datamon.step=t",
    ]);
    assert_eq!(team.len(), 4);
}

#[test]
fn signals_during_run_exec_record_a_failed_run_and_clean_up() {
    let env = Env::new();
    setup(&env);
    let tmp = env.work.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    for (sig, code) in [("TERM", 143), ("INT", 130)] {
        let marker = env.work.join(format!("started-{sig}"));
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("datamon"));
        c.env_remove("DATAMON_STORE")
            .env_remove("DATAMON_CONTEXT")
            .env("DATAMON_HOME", &env.home)
            .env("TMPDIR", &tmp)
            .current_dir(&env.work)
            .args([
                "-q",
                "run",
                "exec",
                "--step",
                "long",
                "--output",
                "model:out/m",
                "--",
                "sh",
                "-c",
            ])
            .arg(format!("touch {}; exec sleep 30", marker.display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let child = c.spawn().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !marker.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(marker.exists(), "the command started");
        // To datamon only (not its process group): it passes the signal on to the command.
        let started = std::time::Instant::now();
        assert!(std::process::Command::new("kill")
            .args([&format!("-{sig}"), &child.id().to_string()])
            .status()
            .unwrap()
            .success());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{sig}: {stderr}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "stopped in {:?}",
            started.elapsed()
        );
        assert!(stderr.contains("interrupted"), "{stderr}");
        let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().flatten().collect();
        assert!(left.is_empty(), "the work folder is removed: {left:?}");
    }
    let runs = env.runs(&["--step", "long"]);
    assert_eq!(runs.len(), 2, "both interrupted runs are recorded");
    assert!(runs.iter().all(|r| r["status"] == "failed"));
    let mut codes: Vec<i64> = runs
        .iter()
        .map(|r| r["exit_code"].as_i64().unwrap())
        .collect();
    codes.sort_unstable();
    assert_eq!(codes, [130, 143]);
    assert!(env.ok(&["bundle", "list", "--repo", "model"]).is_empty());
}

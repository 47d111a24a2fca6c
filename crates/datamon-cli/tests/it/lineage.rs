//! Runs and lineage, end to end through the binary: `run exec/record/list/get/diff`,
//! `bundle lineage`, `log`, `bundle list --where/--since`.
#![allow(clippy::unwrap_used)] // test helpers

use serde_json::Value;

use crate::util::{git_available, Dm};

/// One isolated datamon installation (its own home and embedded store) whose commands run in
/// its working folder, as user `tester`.
fn env() -> Dm {
    Dm::new().with_env("USER", "tester").in_dir("work")
}

/// `datamon --json ARGS`, which may exit 0 or 1 ("they differ"); every stdout line as JSON.
#[track_caller]
fn json(dm: &Dm, args: &[&str]) -> Vec<Value> {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let o = dm.run(&a);
    assert!(o.code == 0 || o.code == 1, "{args:?} failed: {}", o.stderr);
    o.json_lines()
}

/// Writes `content` to `rel` in the working folder.
fn write_work(dm: &Dm, rel: &str, content: &str) {
    crate::util::write(&dm.cwd().join(rel), content);
}

/// Uploads the folder `dir` (relative to the working folder) with label `latest`; the id.
#[track_caller]
fn upload(dm: &Dm, repo: &str, dir: &str, msg: &str) -> String {
    let out = dm.ok([
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
    last_id(&out.stdout, "Uploaded bundle id:")
}

/// `run list ARGS` as JSON.
#[track_caller]
fn run_list(dm: &Dm, args: &[&str]) -> Vec<Value> {
    let mut a = vec!["run", "list"];
    a.extend_from_slice(args);
    json(dm, &a)
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
fn pipeline(dm: &Dm, lr: &str) -> [String; 3] {
    let q = |args: &[&str]| {
        let mut a = vec!["-q", "run", "exec"];
        a.extend_from_slice(args);
        last_id(&dm.ok(&a).stdout, "Recorded run id:")
    };
    let _ = std::fs::remove_dir_all(dm.cwd().join("out"));
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

fn setup(dm: &Dm) {
    for r in ["raw", "prepared", "model", "eval"] {
        dm.ok(["repo", "create", "--repo", r, "--description", r]);
    }
}

#[test]
fn pipeline_twice_run_diff_and_lineage_show_exactly_the_changes() {
    let dm = env();
    setup(&dm);
    write_work(&dm, "raw/a.csv", "x,1\n");
    write_work(&dm, "raw/b.csv", "y,2\n");
    let raw1 = upload(&dm, "raw", "raw", "raw v1");
    let [p1, t1, e1] = pipeline(&dm, "0.1");

    write_work(&dm, "raw/b.csv", "y,3\n");
    let raw2 = upload(&dm, "raw", "raw", "raw v2");
    let [p2, t2, e2] = pipeline(&dm, "0.2");

    // The runs are recorded with their inputs, outputs, params and metrics.
    let runs = run_list(&dm, &[]);
    assert_eq!(runs.len(), 6);
    assert!(runs.iter().all(|r| r["status"] == "succeeded"));
    assert_eq!(run_list(&dm, &["--step", "train"]).len(), 2);
    let t1_run = &json(&dm, &["run", "get", &t1])[0];
    assert_eq!(t1_run["params"]["lr"], "0.1");
    assert_eq!(t1_run["metrics"]["loss.train"], 0.5);
    assert_eq!(t1_run["user"], "tester");
    assert_eq!(t1_run["inputs"][0]["repo"], "prepared");
    assert_eq!(t1_run["outputs"][0]["repo"], "model");

    // prepare: only the raw input changed, by exactly one file.
    let d = &json(&dm, &["run", "diff", &p1, &p2])[0];
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
    let d = &json(&dm, &["run", "diff", &t1, &t2])[0];
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
    let o = dm.run(["run", "diff", &t1, &t2]);
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
    let d = &json(&dm, &["run", "diff", &e1, &e2])[0];
    assert_eq!(d["inputs"][0]["key"], "model:model.txt");
    assert_eq!(
        d["inputs"][0]["changes"],
        serde_json::json!([{"path": "model.txt", "kind": "M"}])
    );

    // A run compared with itself: nothing differs, exit 0.
    let o = dm.run(["run", "diff", &t2, &t2]);
    assert_eq!(o.code, 0, "{}", o.stdout);

    // Lineage of the second evaluation, upstream: evaluate <- model <- train <- prepared <-
    // prepare <- raw v2, and nothing of the first pass.
    let eval2 = s(&json(&dm, &["run", "get", &e2])[0]["outputs"][0]["bundle"]).to_owned();
    let l = &json(
        &dm,
        &[
            "bundle",
            "lineage",
            "--repo",
            "eval",
            "--bundle",
            &eval2,
            "--upstream",
        ],
    )[0];
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
    let text = dm
        .ok(["bundle", "lineage", "--repo", "eval", "--bundle", &eval2])
        .stdout;
    assert!(text.contains("upstream:"), "{text}");
    assert!(text.contains(&format!("run {t2} step train")), "{text}");
    assert!(text.contains("lr=0.2"), "{text}");
    assert!(text.contains(&format!("raw@{raw2}")), "{text}");
    assert!(text.contains("(no recorded run read it)"), "{text}");

    // Depth 1: only the producing run and its direct input.
    let l = &json(
        &dm,
        &[
            "bundle",
            "lineage",
            "--repo",
            "eval",
            "--bundle",
            &eval2,
            "--upstream",
            "--depth",
            "1",
        ],
    )[0];
    assert_eq!(l["runs"].as_array().unwrap().len(), 1);
    assert_eq!(l["runs"][0]["id"], e2.as_str());

    // Downstream of raw v1: the first pass only.
    let l = &json(
        &dm,
        &[
            "bundle",
            "lineage",
            "--repo",
            "raw",
            "--bundle",
            &raw1,
            "--downstream",
        ],
    )[0];
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
    let dot = dm
        .ok([
            "bundle", "lineage", "--repo", "raw", "--bundle", &raw1, "--format", "dot",
        ])
        .stdout;
    assert!(dot.starts_with("digraph lineage {"), "{dot}");
    assert!(dot.contains(&format!("\"r:{t1}\"")), "{dot}");
    let mm = dm
        .ok([
            "bundle", "lineage", "--repo", "raw", "--bundle", &raw1, "--format", "mermaid",
        ])
        .stdout;
    assert!(mm.starts_with("flowchart LR"), "{mm}");
    assert!(mm.contains(&format!("r_{e1}")), "{mm}");

    // The model branch log: newest first, each bundle with its producing run.
    let log = json(&dm, &["log", "--repo", "model"]);
    assert_eq!(log.len(), 2);
    assert_eq!(log[0]["run"], t2.as_str());
    assert_eq!(log[1]["run"], t1.as_str());
    let text = dm.ok(["log", "--repo", "model", "-n", "1"]).stdout;
    assert!(text.contains(&format!("Run:    {t2} (train)")), "{text}");
    assert!(!text.contains(&t1), "{text}");

    // Bundles are queryable by metadata and time.
    let found = json(
        &dm,
        &[
            "bundle",
            "list",
            "--repo",
            "model",
            "--where",
            &format!("meta.datamon.run={t1}"),
        ],
    );
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["meta"]["datamon.step"], "train");
    assert_eq!(
        json(
            &dm,
            &["bundle", "list", "--repo", "model", "--since", "2000-01-01"]
        )
        .len(),
        2
    );
    assert!(json(
        &dm,
        &["bundle", "list", "--repo", "model", "--since", "2999-01-01"]
    )
    .is_empty());
    assert_eq!(run_list(&dm, &["--since", "1h"]).len(), 6);
    assert!(run_list(&dm, &["--since", "2999-01-01"]).is_empty());
}

#[test]
fn failed_command_records_a_failed_run_and_uploads_nothing() {
    let dm = env();
    setup(&dm);
    write_work(&dm, "raw/a.csv", "a\n");
    upload(&dm, "raw", "raw", "v1");
    let o = dm.run([
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
    let runs = run_list(&dm, &[]);
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["status"], "failed");
    assert_eq!(runs[0]["exit_code"], 3);
    assert_eq!(runs[0]["params"]["lr"], "1");
    assert!(runs[0]["outputs"].as_array().unwrap().is_empty());
    assert_eq!(runs[0]["inputs"].as_array().unwrap().len(), 1);
    assert!(dm
        .ok(["bundle", "list", "--repo", "model"])
        .stdout
        .is_empty());
    let text = dm.ok(["run", "get", s(&runs[0]["id"])]).stdout;
    assert!(text.contains("failed (exit 3)"), "{text}");
}

fn assert_nothing_recorded(dm: &Dm) {
    assert!(run_list(dm, &[]).is_empty());
    assert!(dm
        .ok(["bundle", "list", "--repo", "model"])
        .stdout
        .is_empty());
}

#[test]
fn bad_input_is_refused_before_anything_is_recorded() {
    let dm = env();
    setup(&dm);
    write_work(&dm, "raw/a.csv", "a\n");
    upload(&dm, "raw", "raw", "v1");
    let exec = |extra: &[&str], command: &[&str]| {
        let mut a = vec!["run", "exec", "--step", "s"];
        a.extend_from_slice(extra);
        a.push("--");
        a.extend_from_slice(command);
        dm.run(&a)
    };
    let marker = dm.cwd().join("ran");
    let touch = ["sh", "-c", "touch ran"];

    // A command that is not found.
    let o = exec(
        &["--input", "raw@latest", "--output", "model:out/m"],
        &["no-such-command-xyz"],
    );
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("command not found"), "{}", o.stderr);
    assert!(o.stderr.contains("no-such-command-xyz"), "{}", o.stderr);
    assert_nothing_recorded(&dm);

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
    write_work(&dm, "out/file", "x");
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
    assert_nothing_recorded(&dm);

    // Unknown and malformed run ids.
    let o = dm.run(["run", "get", "3MXPX4b8A4hskhBeh825gqhcqmQ"]);
    assert_eq!(o.code, 2);
    assert!(
        o.stderr
            .contains("run 3MXPX4b8A4hskhBeh825gqhcqmQ not found"),
        "{}",
        o.stderr
    );
    let o = dm.run(["run", "get", "nope"]);
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("invalid run id"), "{}", o.stderr);
    let o = dm.run([
        "run",
        "diff",
        "3MXPX4b8A4hskhBeh825gqhcqmQ",
        "3MXPX4b8A4hskhBeh825gqhcqmR",
    ]);
    assert_eq!(o.code, 2);
    let o = dm.run([
        "bundle",
        "lineage",
        "--repo",
        "raw",
        "--bundle",
        "3MXPX4b8A4hskhBeh825gqhcqmQ",
    ]);
    assert_eq!(o.code, 2);
    let o = dm.run(["bundle", "list", "--repo", "raw", "--where", "x=y"]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("meta.KEY=VALUE"), "{}", o.stderr);
}

#[test]
fn run_record_for_a_step_executed_elsewhere() {
    let dm = env();
    setup(&dm);
    write_work(&dm, "raw/a.csv", "a\n");
    let raw = upload(&dm, "raw", "raw", "v1");
    write_work(&dm, "m/model.bin", "weights");
    let model = upload(&dm, "model", "m", "model from argo");
    std::fs::write(dm.cwd().join("metrics.json"), r#"{"acc": 0.75}"#).unwrap();
    let out = dm
        .ok([
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
        ])
        .stdout;
    let id = last_id(&out, "Recorded run id:");
    let r = &json(&dm, &["run", "get", &id])[0];
    assert_eq!(r["git_commit"], "abc123");
    assert_eq!(r["image"], "registry/train@sha256:0123");
    assert_eq!(r["metrics"]["acc"], 0.75);
    assert_eq!(r["started_at"], "2026-01-01T10:00:00Z");
    let text = dm.ok(["run", "get", &id]).stdout;
    assert!(
        text.contains("git abc123, image registry/train@sha256:0123"),
        "{text}"
    );
    assert_eq!(run_list(&dm, &["--where", "meta.team=vision"]).len(), 1);
    assert!(run_list(&dm, &["--where", "meta.team=nlp"]).is_empty());
    let l = &json(
        &dm,
        &[
            "bundle",
            "lineage",
            "--repo",
            "model",
            "--bundle",
            &model,
            "--upstream",
        ],
    )[0];
    assert_eq!(l["runs"][0]["id"], id.as_str());
    assert_eq!(
        json(&dm, &["log", "--repo", "model"])[0]["run"],
        id.as_str()
    );

    // Outputs must exist.
    let o = dm.run([
        "run",
        "record",
        "--step",
        "x",
        "--output",
        "model@3MXPX4b8A4hskhBeh825gqhcqmQ",
    ]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert_eq!(run_list(&dm, &[]).len(), 1);
    // Times must make sense.
    let o = dm.run([
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
    if !git_available() {
        return;
    }
    let dm = env();
    setup(&dm);
    let git = |args: &[&str]| {
        let ok = std::process::Command::new("git")
            .args(args)
            .current_dir(dm.cwd())
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@e")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@e")
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok
    };
    assert!(git(&["init", "-q"]));
    write_work(&dm, "train.py", "print(1)\n");
    assert!(git(&["add", "train.py"]));
    assert!(git(&["commit", "-qm", "c"]));
    let head = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(dm.cwd())
        .output()
        .unwrap();
    let head = String::from_utf8(head.stdout).unwrap().trim().to_owned();
    let run = |dirty: bool| {
        if dirty {
            write_work(&dm, "train.py", "print(2)\n");
        }
        let out = dm
            .ok(["-q", "run", "exec", "--step", "t", "--", "true"])
            .stdout;
        let id = last_id(&out, "Recorded run id:");
        json(&dm, &["run", "get", &id]).remove(0)
    };
    let clean = run(false);
    assert_eq!(clean["git_commit"], head.as_str());
    assert_eq!(clean["git_dirty"], false);
    let dirty = run(true);
    assert_eq!(dirty["git_dirty"], true);
    let d = &json(&dm, &["run", "diff", s(&clean["id"]), s(&dirty["id"])])[0];
    assert_eq!(d["code_changed"], true);
}

#[test]
fn inputs_params_and_run_id_reach_the_command() {
    let dm = env();
    setup(&dm);
    write_work(&dm, "raw/a.csv", "a\n");
    write_work(&dm, "raw/sub/b.csv", "b\n");
    let raw = upload(&dm, "raw", "raw", "v1");
    let out = dm
        .ok([
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
        ])
        .stdout;
    let id = last_id(&out, "Recorded run id:");
    assert_eq!(
        out.lines().count(),
        1,
        "the command's stdout goes to stderr: {out}"
    );
    let seen = std::fs::read_to_string(dm.cwd().join("id.txt")).unwrap();
    assert_eq!(seen.trim(), id);
    let r = &json(&dm, &["run", "get", &id])[0];
    assert_eq!(r["inputs"][0]["bundle"], raw.as_str());
    assert_eq!(r["inputs"][1]["path"], "sub/b.csv");
    assert_eq!(r["params"]["k"], "v 1");
}

#[test]
fn outputs_go_to_the_named_branch_or_label() {
    let dm = env();
    setup(&dm);
    dm.ok(["branch", "create", "--repo", "model", "--branch", "dev"]);
    let exec = |target: &str| {
        let out = dm
            .ok([
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
            ])
            .stdout;
        let id = last_id(&out, "Recorded run id:");
        s(&json(&dm, &["run", "get", &id])[0]["outputs"][0]["bundle"]).to_owned()
    };
    let on_main = exec("");
    let on_dev = exec("@dev");
    let labelled = exec("@prod");
    let explicit = exec("@label:staging");
    let get = |args: &[&str]| {
        let mut a = vec!["bundle", "get", "--repo", "model"];
        a.extend_from_slice(args);
        s(&json(&dm, &a)[0]["id"]).to_owned()
    };
    assert_eq!(get(&["--branch", "dev"]), on_dev);
    assert_eq!(get(&["--label", "prod"]), labelled);
    assert_eq!(get(&["--label", "staging"]), explicit);
    assert_eq!(get(&["--branch", "main"]), explicit);
    let log: Vec<String> = json(&dm, &["log", "--repo", "model"])
        .iter()
        .map(|e| s(&e["id"]).to_owned())
        .collect();
    assert_eq!(log, vec![explicit.clone(), labelled.clone(), on_main]);
    let team = json(
        &dm,
        &[
            "bundle",
            "list",
            "--repo",
            "model",
            "--where",
            "meta.team=vision",
            "--where",
            "meta.datamon.step=t",
        ],
    );
    assert_eq!(team.len(), 4);
}

#[test]
fn signals_during_run_exec_record_a_failed_run_and_clean_up() {
    let dm = env();
    setup(&dm);
    let tmp = dm.cwd().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    for (sig, code) in [("TERM", 143), ("INT", 130)] {
        let marker = dm.cwd().join(format!("started-{sig}"));
        let mut c = dm.command();
        c.env("TMPDIR", &tmp)
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
    let runs = run_list(&dm, &["--step", "long"]);
    assert_eq!(runs.len(), 2, "both interrupted runs are recorded");
    assert!(runs.iter().all(|r| r["status"] == "failed"));
    let mut codes: Vec<i64> = runs
        .iter()
        .map(|r| r["exit_code"].as_i64().unwrap())
        .collect();
    codes.sort_unstable();
    assert_eq!(codes, [130, 143]);
    assert!(dm
        .ok(["bundle", "list", "--repo", "model"])
        .stdout
        .is_empty());
}

//! Queries across runs, end to end: `run compare` (table, CSV, JSON, --vary) and
//! `run diff --deep`, over a synthetic pipeline (prepare -> train -> evaluate) run by `run exec`
//! over a grid of parameters and two raw-data versions.
#![allow(clippy::unwrap_used)] // test helpers

use serde_json::Value;

use crate::util::{Dm, Out};

fn env() -> Dm {
    Dm::new().with_env("USER", "tester").in_dir("work")
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

/// `run exec ARGS`; the run id and its first output bundle.
#[track_caller]
fn exec(dm: &Dm, args: &[&str]) -> (String, String) {
    let mut a = vec!["-q", "run", "exec"];
    a.extend_from_slice(args);
    let run = last_id(&dm.ok(&a).stdout, "Recorded run id:");
    let got = dm.ok(["--json", "run", "get", &run]).json();
    let out = got["outputs"][0]["bundle"].as_str().unwrap().to_owned();
    (run, out)
}

fn prepare(dm: &Dm, raw: &str) -> (String, String) {
    let _ = std::fs::remove_dir_all(dm.cwd().join("out"));
    exec(
        dm,
        &[
            "--step",
            "prepare",
            "--input",
            &format!("raw@{raw}"),
            "--param",
            "scale=1",
            "--output",
            "prepared:out/prepared",
            "--",
            "sh",
            "-c",
            "for f in \"$DATAMON_INPUT_RAW\"/*.csv; do tr a-z A-Z < \"$f\" > {output:prepared}/$(basename \"$f\"); done",
        ],
    )
}

fn train(dm: &Dm, prepared: &str, lr: &str) -> (String, String) {
    let _ = std::fs::remove_dir_all(dm.cwd().join("out"));
    exec(
        dm,
        &[
            "--step",
            "train",
            "--input",
            &format!("prepared@{prepared}"),
            "--param",
            &format!("lr={lr}"),
            "--param",
            "epochs=3",
            "--output",
            "model:out/model",
            "--",
            "sh",
            "-c",
            "cat {input:prepared}/*.csv > $DATAMON_OUTPUT_MODEL/model.txt; echo lr=$DATAMON_PARAM_LR >> $DATAMON_OUTPUT_MODEL/model.txt; awk -v lr=$DATAMON_PARAM_LR 'BEGIN { printf \"{\\\"loss\\\": %.2f}\", 1 - lr }' > \"$DATAMON_METRICS\"",
        ],
    )
}

fn evaluate(dm: &Dm, model: &str) -> (String, String) {
    let _ = std::fs::remove_dir_all(dm.cwd().join("out"));
    exec(
        dm,
        &[
            "--step",
            "evaluate",
            "--input",
            &format!("model@{model}:model.txt"),
            "--output",
            "eval:out/eval",
            "--",
            "sh",
            "-c",
            "wc -c < \"$DATAMON_INPUT_MODEL\" > $DATAMON_OUTPUT_EVAL/score.txt; awk -v n=$(wc -c < \"$DATAMON_INPUT_MODEL\") 'BEGIN { printf \"{\\\"acc\\\": %.2f}\", n / 100 }' > \"$DATAMON_METRICS\"",
        ],
    )
}

struct Grid {
    raw: [String; 2],
    /// [raw version][lr index]
    train: [[String; 2]; 2],
    evaluate: [[String; 2]; 2],
}

const LRS: [&str; 2] = ["0.1", "0.2"];

/// Two raw versions (the second changes one file, and takes the label `latest`), each prepared,
/// trained with lr 0.1 and 0.2, and evaluated.
fn grid(dm: &Dm) -> Grid {
    for r in ["raw", "prepared", "model", "eval"] {
        dm.ok(["repo", "create", "--repo", r, "--description", r]);
    }
    crate::util::write(&dm.cwd().join("raw/a.csv"), "x,1\n");
    let mut raw = Vec::new();
    let mut trains: Vec<[String; 2]> = Vec::new();
    let mut evaluations: Vec<[String; 2]> = Vec::new();
    for v in ["y,2\n", "y,3\n"] {
        crate::util::write(&dm.cwd().join("raw/b.csv"), v);
        let out = dm.ok([
            "-q",
            "bundle",
            "upload",
            "--repo",
            "raw",
            "--path",
            "raw",
            "--message",
            v,
            "--label",
            "latest",
        ]);
        let r = last_id(&out.stdout, "Uploaded bundle id:");
        let (_, prepared) = prepare(dm, &r);
        let mut t = Vec::new();
        let mut e = Vec::new();
        for lr in LRS {
            let (run, model) = train(dm, &prepared, lr);
            t.push(run);
            e.push(evaluate(dm, &model).0);
        }
        raw.push(r);
        trains.push(t.try_into().unwrap());
        evaluations.push(e.try_into().unwrap());
    }
    Grid {
        raw: raw.try_into().unwrap(),
        train: trains.try_into().unwrap(),
        evaluate: evaluations.try_into().unwrap(),
    }
}

fn compare(dm: &Dm, args: &[&str]) -> Out {
    let mut a = vec!["run", "compare"];
    a.extend_from_slice(args);
    dm.run(&a)
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap()
}

/// The run ids of each group of a `--vary --json` answer.
fn group_ids(v: &Value) -> Vec<Vec<String>> {
    v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let mut ids: Vec<String> = g["runs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| s(&r["run"]["id"]).to_owned())
                .collect();
            ids.sort();
            ids
        })
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn compare_vary_and_deep_diff_over_a_grid_of_runs() {
    let dm = env();
    let g = grid(&dm);

    // The table: one row per run, with parameters, bundles (labels too) and metrics.
    let o = compare(&dm, &["--step", "train"]).success();
    let lines = o.lines();
    assert_eq!(lines.len(), 5, "{o:?}");
    let head: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        head,
        ["run", "started", "code", "epochs", "lr", "prepared", "model", "loss"],
        "{o:?}"
    );
    assert!(lines[1].starts_with(&g.train[0][0][..8]), "{o:?}");
    assert!(lines[1].ends_with("0.9"), "{o:?}");
    let o = compare(&dm, &["--step", "prepare"]).success();
    let lines = o.lines();
    assert!(
        lines[1].contains(&g.raw[0][..8]) && !lines[1].contains("(latest)"),
        "{o:?}"
    );
    assert!(
        lines[2].contains(&format!("{} (latest)", &g.raw[1][..8])),
        "{o:?}"
    );
    // Every step, with a step column.
    let o = compare(&dm, &[]).success();
    assert_eq!(o.lines().len(), 1 + 2 + 4 + 4);
    assert!(o.lines()[0].contains("step"), "{o:?}");

    // JSON: NDJSON, the run as `run get` prints it, bundles with slots and labels.
    let rows = dm
        .ok(["--json", "run", "compare", "--step", "prepare"])
        .json_lines();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["run"]["step"], "prepare");
    assert_eq!(rows[1]["run"]["params"]["scale"], "1");
    assert_eq!(rows[1]["inputs"][0]["slot"], "raw");
    assert_eq!(rows[1]["inputs"][0]["bundle"], g.raw[1].as_str());
    assert_eq!(
        rows[1]["inputs"][0]["labels"],
        serde_json::json!(["latest"])
    );
    assert_eq!(rows[0]["outputs"][0]["repo"], "prepared");

    // CSV: a header, full ids, chosen columns, sorted.
    let o = compare(
        &dm,
        &[
            "--step",
            "train",
            "--csv",
            "--columns",
            "id,lr,loss,prepared",
            "--sort",
            "-loss",
        ],
    )
    .success();
    let lines = o.lines();
    assert_eq!(lines[0], "run,lr,loss,prepared");
    assert_eq!(lines.len(), 5);
    let first: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(first[0].len(), 27);
    assert_eq!((first[1], first[2]), ("0.1", "0.9"));
    assert_eq!(lines[4].split(',').nth(2), Some("0.8"));
    // --where filters.
    let o = compare(&dm, &["--step", "train", "--where", "lr=0.1", "--csv"]).success();
    assert_eq!(o.lines().len(), 3);
    let o = compare(&dm, &["--where", "metric.loss=0.8", "--csv"]).success();
    assert_eq!(o.lines().len(), 3);

    // --vary lr: per raw version, the two runs that differ only in lr.
    let v = dm
        .ok([
            "--json", "run", "compare", "--step", "train", "--vary", "lr",
        ])
        .json();
    assert_eq!(v["varies"], serde_json::json!(["param:lr"]));
    assert_eq!(v["upstream"], false);
    assert_eq!(
        group_ids(&v),
        [sorted(g.train[0].to_vec()), sorted(g.train[1].to_vec())]
    );
    assert_eq!(
        v["groups"][0]["runs"][0]["value"],
        serde_json::json!(["0.1"])
    );
    assert_eq!(v["left_out"]["runs"], 0);
    let text = compare(&dm, &["--step", "train", "--vary", "lr"])
        .success()
        .stdout;
    assert!(
        text.contains("runs that differ only in param:lr: 2 groups, 4 of 4 runs"),
        "{text}"
    );
    assert!(text.contains("group 1: input:prepared="), "{text}");
    assert!(text.contains("group 2: input:prepared="), "{text}");

    // --vary raw: two steps up, through the prepare runs.
    let v = dm
        .ok([
            "--json", "run", "compare", "--step", "train", "--vary", "raw",
        ])
        .json();
    assert_eq!(v["varies"], serde_json::json!(["prepared/input:raw"]));
    assert_eq!(v["upstream"], true);
    assert_eq!(
        group_ids(&v),
        (0..2)
            .map(|i| sorted(vec![g.train[0][i].clone(), g.train[1][i].clone()]))
            .collect::<Vec<_>>()
    );
    let text = compare(&dm, &["--step", "train", "--vary", "raw"])
        .success()
        .stdout;
    assert!(text.contains("(through lineage)"), "{text}");
    assert!(text.contains("group 1: param:lr=0.1"), "{text}");
    let v = dm
        .ok([
            "--json", "run", "compare", "--step", "evaluate", "--vary", "raw",
        ])
        .json();
    assert_eq!(
        v["varies"],
        serde_json::json!(["model:model.txt/prepared/input:raw"])
    );
    assert_eq!(
        group_ids(&v),
        (0..2)
            .map(|i| sorted(vec![g.evaluate[0][i].clone(), g.evaluate[1][i].clone()]))
            .collect::<Vec<_>>()
    );
    // CSV of a variation: group, value, then the columns.
    let o = compare(&dm, &["--step", "train", "--vary", "lr", "--csv"]).success();
    assert_eq!(o.lines()[0], "group,param:lr,run,started,loss");
    assert_eq!(o.lines().len(), 5);

    // --deep: evaluate runs with the same lr on the two raw versions: the raw bundle, two
    // steps above train, alone differs.
    let (e1, e2) = (&g.evaluate[0][1], &g.evaluate[1][1]);
    let o = dm.run(["run", "diff", e1, e2, "--deep"]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.stdout.contains("[1] evaluate:"), "{o:?}");
    assert!(
        o.stdout.contains("[2] train (via model:model.txt):"),
        "{o:?}"
    );
    assert!(
        o.stdout
            .contains("[3] prepare (via model:model.txt/prepared):"),
        "{o:?}"
    );
    assert!(
        o.stdout.contains("no recorded run produced either bundle"),
        "{o:?}"
    );
    assert!(
        o.stdout.contains(
            "only one component differs: model:model.txt/prepared/input:raw (step prepare, 2 steps up)"
        ),
        "{o:?}"
    );
    assert!(o.stdout.contains("1 path changed: M b.csv"), "{o:?}");
    let d = dm.run(["--json", "run", "diff", e1, e2, "--deep"]).json();
    assert_eq!(d["a"], e1.as_str());
    assert_eq!(d["steps"].as_array().unwrap().len(), 3);
    assert_eq!(d["steps"][0]["inputs"][0]["origin"], "followed");
    assert_eq!(d["steps"][0]["inputs"][0]["step"], 1);
    assert_eq!(d["steps"][2]["inputs"][0]["origin"], "no_producer");
    assert_eq!(d["steps"][0]["diff"]["a"]["id"], e1.as_str());
    assert_eq!(d["only"]["component"], "model:model.txt/prepared/input:raw");
    assert_eq!(d["only"]["a"], g.raw[0].as_str());
    assert_eq!(d["only"]["b"], g.raw[1].as_str());
    assert_eq!(
        d["only"]["changes"],
        serde_json::json!([{"path": "b.csv", "kind": "M"}])
    );
    // Other raw and other lr: two components differ, listed.
    let o = dm.run([
        "run",
        "diff",
        &g.evaluate[0][0],
        &g.evaluate[1][1],
        "--deep",
    ]);
    assert_eq!(o.code, 1);
    assert!(o.stdout.contains("2 components differ:"), "{o:?}");
    assert!(
        o.stdout
            .contains("model:model.txt/param:lr (step train, 1 step up): 0.1 -> 0.2"),
        "{o:?}"
    );
    // --depth stops the walk.
    let d = dm
        .run(["--json", "run", "diff", e1, e2, "--deep", "--depth", "1"])
        .json();
    assert_eq!(d["steps"].as_array().unwrap().len(), 2);
    assert_eq!(d["only"]["component"], "model:model.txt/input:prepared");
    // The same run: nothing differs, exit 0; the plain diff is unchanged.
    let o = dm.run(["run", "diff", e1, e1, "--deep"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.contains("the runs do not differ"), "{o:?}");
    assert_eq!(dm.run(["run", "diff", e1, e2]).code, 1);
}

#[test]
fn bad_names_and_empty_results_get_clear_messages() {
    let dm = env();
    // No runs at all.
    let o = compare(&dm, &[]).success();
    assert!(o.stdout.is_empty());
    assert!(
        o.stderr.contains("no run is recorded in this store"),
        "{o:?}"
    );

    let g = grid(&dm);
    let o = compare(&dm, &["--step", "trian"]).success();
    assert!(o.stdout.is_empty(), "{o:?}");
    assert!(
        o.stderr
            .contains("no runs of step \"trian\" (recorded steps: evaluate, prepare, train)"),
        "{o:?}"
    );
    let o = compare(&dm, &["--step", "train", "--where", "lr=9"]).success();
    assert!(
        o.stderr
            .contains("no runs match (step train, 1 --where filters)"),
        "{o:?}"
    );
    let o = compare(&dm, &["--since", "2999-01-01"]).success();
    assert!(
        o.stderr
            .contains("no runs match (since 2999-01-01T00:00:00Z)"),
        "{o:?}"
    );

    // A component the runs do not have: the message lists those they have.
    let o = compare(&dm, &["--step", "train", "--vary", "momentum"]).code(1);
    assert!(
        o.stderr
            .contains("the runs of step \"train\" have no component \"momentum\""),
        "{o:?}"
    );
    assert!(o.stderr.contains("param:lr"), "{o:?}");
    assert!(o.stderr.contains("through lineage: prepared/code"), "{o:?}");
    let o = compare(&dm, &["--step", "train", "--vary", "param:"]).code(1);
    assert!(o.stderr.contains("component \"param:\""), "{o:?}");
    // --vary needs a step (a usage error).
    let o = compare(&dm, &["--vary", "lr"]).code(2);
    assert!(o.stderr.contains("--step"), "{o:?}");
    // A variation with no group: said so, and why.
    let o = compare(
        &dm,
        &["--step", "train", "--where", "lr=0.1", "--vary", "lr"],
    )
    .success();
    assert!(
        o.stderr.contains(
            "no two runs of step \"train\" differ only in param:lr; 2 of 2 runs left out"
        ),
        "{o:?}"
    );
    let o = compare(&dm, &["--step", "trian", "--vary", "lr"]).success();
    assert!(o.stderr.contains("no runs of step \"trian\""), "{o:?}");
    assert!(o.stdout.is_empty());
    // Bad columns, sort keys, filters.
    let o = compare(&dm, &["--step", "train", "--columns", "id,nope"]).code(1);
    assert!(
        o.stderr.contains("--columns \"nope\": no such column"),
        "{o:?}"
    );
    assert!(o.stderr.contains("params (epochs, lr)"), "{o:?}");
    let o = compare(&dm, &["--step", "train", "--sort", "nope"]).code(1);
    assert!(o.stderr.contains("cannot sort by \"nope\""), "{o:?}");
    let o = compare(&dm, &["--where", "status=maybe"]).code(2);
    assert!(o.stderr.contains("succeeded or failed"), "{o:?}");
    let o = dm.run(["--json", "run", "compare", "--csv"]).code(1);
    assert!(o.stderr.contains("--csv and --json"), "{o:?}");
    // --depth without --deep; an unknown run.
    let o = dm.run([
        "run",
        "diff",
        &g.train[0][0],
        &g.train[0][1],
        "--depth",
        "1",
    ]);
    assert_eq!(o.code, 2, "{o:?}");
    let o = dm.run([
        "run",
        "diff",
        &g.train[0][0],
        "3MXU6q2YNl7HHKtRDaepSNiNh3P",
        "--deep",
    ]);
    assert_eq!(o.code, 2, "{o:?}");
    assert!(o.stderr.contains("not found"), "{o:?}");
}

//! The pod sidecar: `datamon sidecar` and `datamon sidecar exec` as two processes sharing a
//! folder, as two containers share an `emptyDir`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

/// A simulated pod: a store with repos `raw` (one bundle with `a.txt`) and `model`, and a shared
/// folder.
struct Pod {
    dm: Dm,
    shared: PathBuf,
}

impl Pod {
    fn new() -> Pod {
        let dm = Dm::new();
        dm.create_repo("raw");
        dm.create_repo("model");
        let data = dm.dir("data");
        write(&data.join("a.txt"), "hello\n");
        dm.upload("raw", &data, "v1", &[]);
        let shared = dm.path("shared");
        Pod { dm, shared }
    }

    fn coord(&self) -> PathBuf {
        self.shared.join(".datamon")
    }

    fn out(&self) -> PathBuf {
        self.shared.join("out/model")
    }

    fn ids(&self) -> PathBuf {
        self.shared.join("ids")
    }

    /// `datamon sidecar` with short time limits and `extra` arguments, started.
    fn sidecar(&self, extra: &[&str]) -> Child {
        let mut c = self.dm.command();
        c.args(["sidecar", "--coordination"])
            .arg(self.coord())
            .args([
                "--stale-after",
                "2s",
                "--start-timeout",
                "20s",
                "--heartbeat",
                "200ms",
            ])
            .args(extra);
        spawn(c)
    }

    /// The standard sidecar: input raw linked at shared/in/raw, output model from shared/out/model.
    fn standard_sidecar(&self, extra: &[&str]) -> Child {
        let input = format!("raw@main={}", self.shared.join("in/raw").display());
        let output = format!("model:{}", self.out().display());
        let ids = self.ids().display().to_string();
        let mut args = vec![
            "--step",
            "train",
            "--input",
            &input,
            "--output",
            &output,
            "--ids-dir",
            &ids,
        ];
        args.extend_from_slice(extra);
        self.sidecar(&args)
    }

    /// `datamon sidecar exec -- sh -c SCRIPT`, started (it needs no store: no home, no store).
    fn app(&self, script: &str) -> Child {
        let mut c = Command::new(bin());
        c.env_remove("DATAMON_HOME")
            .env_remove("DATAMON_STORE")
            .args(["sidecar", "exec", "--coordination"])
            .arg(self.coord())
            .args([
                "--stale-after",
                "2s",
                "--start-timeout",
                "20s",
                "--heartbeat",
                "200ms",
            ])
            .args(["--", "sh", "-c", script])
            .stdin(Stdio::null());
        spawn(c)
    }

    fn runs(&self) -> Vec<serde_json::Value> {
        self.dm.ok(["--json", "run", "list"]).json_lines()
    }

    fn model_bundles(&self) -> usize {
        self.dm
            .run(["bundle", "list", "--repo", "model"])
            .lines()
            .len()
    }
}

fn spawn(mut c: Command) -> Child {
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start datamon")
}

/// Waits at most `secs` for `child`; a child still running then is killed and the test fails.
#[track_caller]
fn wait_within(mut child: Child, secs: u64, what: &str) -> (Out, Duration) {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        if child.try_wait().expect("poll the child").is_some() {
            return (Out::wait(child, what), t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = Out::wait(child, what);
    panic!("{what} did not exit within {secs} s: {out:?}");
}

/// Waits until `path` exists (at most 30 s).
#[track_caller]
fn wait_for_file(path: &Path) {
    let t0 = Instant::now();
    while !path.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{} did not appear",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kill(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -{signal} {pid}");
}

#[test]
fn sidecar_success_uploads_records_and_writes_ids() {
    let pod = Pod::new();
    // Configured by a YAML file, as from a ConfigMap.
    let config = pod.dm.path("sidecar.yaml");
    write(
        &config,
        format!(
            "step: train\ninputs:\n  - input: raw@main\n    link: {}\noutputs:\n  - path: {}\n    repo: model\n    target: label:candidate\nparams:\n  lr: 0.1\nmeta:\n  team: vision\nids_dir: {}\n",
            pod.shared.join("in/raw").display(),
            pod.out().display(),
            pod.ids().display()
        ),
    );
    let sc = pod.sidecar(&["--config", config.to_str().expect("utf-8")]);
    let app = pod.app(
        "test \"$(cat {input:raw}/a.txt)\" = hello && cat $DATAMON_INPUT_RAW/a.txt > $DATAMON_OUTPUT_MODEL/m.txt && echo lr={param:lr} >> {output:model}/m.txt && echo '{\"acc\": 0.9}' > $DATAMON_METRICS",
    );
    let (app, _) = wait_within(app, 60, "sidecar exec");
    let (sc, _) = wait_within(sc, 60, "sidecar");
    app.success();
    let sc = sc.success().stdout_has("Recorded run id:");
    let id = std::fs::read_to_string(pod.ids().join("model")).expect("ids/model");
    assert_valid_id(&id);
    let all: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(pod.ids().join("outputs.json")).expect("outputs.json"),
    )
    .expect("JSON");
    assert_eq!(all["model"], id.as_str());
    let run_id = std::fs::read_to_string(pod.ids().join("run-id")).expect("run-id");
    assert!(sc.stdout.contains(&run_id), "{sc:?}");

    let run = pod.dm.ok(["--json", "run", "get", &run_id]).json();
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["step"], "train");
    // The command line is the wrapper's, as written (before `{input:..}` substitution).
    assert_eq!(run["command"][0], "sh", "{run}");
    assert_eq!(run["command"][1], "-c", "{run}");
    assert!(
        run["command"][2]
            .as_str()
            .is_some_and(|c| c.contains("{param:lr}")),
        "{run}"
    );
    assert_eq!(run["params"]["lr"], "0.1");
    assert_eq!(run["metrics"]["acc"], 0.9);
    assert_eq!(run["inputs"][0]["repo"], "raw");
    assert_eq!(run["outputs"][0]["bundle"], id.as_str());
    let dest = pod.dm.dir("got");
    pod.dm.download("model", &id, &dest);
    assert_eq!(
        std::fs::read_to_string(dest.join("m.txt")).expect("m.txt"),
        "hello\nlr=0.1\n"
    );
    pod.dm
        .ok(["label", "get", "--repo", "model", "--label", "candidate"])
        .stdout_has(&id);
}

#[test]
fn app_failure_records_a_failed_run_and_uploads_nothing() {
    let pod = Pod::new();
    let sc = pod.standard_sidecar(&[]);
    let app = pod.app("echo partial > $DATAMON_OUTPUT_MODEL/x; exit 3");
    let (app, _) = wait_within(app, 60, "sidecar exec");
    let (sc, _) = wait_within(sc, 60, "sidecar");
    app.code(3);
    sc.failure().stderr_has("exit status 3");
    assert_eq!(pod.model_bundles(), 0, "nothing is uploaded");
    let runs = pod.runs();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["status"], "failed");
    assert_eq!(runs[0]["exit_code"], 3);
    assert_eq!(runs[0]["command"][0], "sh", "{:?}", runs[0]);
    assert!(!pod.ids().join("model").exists());
}

#[test]
fn a_bad_input_repo_fails_the_wrapper_with_the_sidecars_reason() {
    let pod = Pod::new();
    let out = format!("model:{}", pod.out().display());
    let sc = pod.sidecar(&[
        "--step",
        "train",
        "--input",
        "nosuch@main",
        "--output",
        &out,
    ]);
    let app = pod.app("touch ran");
    let (app, took) = wait_within(app, 30, "sidecar exec");
    let (sc, _) = wait_within(sc, 30, "sidecar");
    sc.failure().stderr_has("nosuch");
    app.failure()
        .stderr_has("the sidecar failed")
        .stderr_has("nosuch")
        .stderr_has("did not run");
    assert!(took < Duration::from_secs(15), "the wrapper took {took:?}");
    assert!(!pod.dm.cwd().join("ran").exists(), "the command never ran");
    assert!(
        pod.runs().is_empty(),
        "nothing was planned, nothing recorded"
    );
}

#[test]
fn an_unreachable_store_fails_the_wrapper_with_the_sidecars_reason() {
    let pod = Pod::new();
    // A closed loopback port: the store cannot be reached.
    let mut c = pod.dm.command();
    c.envs([
        ("AWS_ENDPOINT", "http://127.0.0.1:9"),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_ACCESS_KEY_ID", "a"),
        ("AWS_SECRET_ACCESS_KEY", "b"),
        ("AWS_REGION", "us-east-1"),
    ])
    .args(["--store", "s3://nobucket/x", "sidecar", "--coordination"])
    .arg(pod.coord())
    .args(["--step", "train", "--input", "raw@main"]);
    let sc = spawn(c);
    let app = pod.app("touch ran");
    let (app, took) = wait_within(app, 60, "sidecar exec");
    let (sc, _) = wait_within(sc, 60, "sidecar");
    sc.failure().stderr_has("cannot open store");
    app.failure()
        .stderr_has("the sidecar failed")
        .stderr_has("cannot open store s3://nobucket/x");
    assert!(took < Duration::from_secs(45), "the wrapper took {took:?}");
}

#[test]
fn a_killed_sidecar_is_noticed_by_the_wrapper_within_the_stale_limit() {
    let pod = Pod::new();
    let sc = pod.standard_sidecar(&[]);
    let pidfile = pod.dm.path("app.pid");
    let app = pod.app(&format!("echo $$ > {}; exec sleep 60", pidfile.display()));
    wait_for_file(&pidfile);
    kill(sc.id(), "KILL");
    let (sc, _) = wait_within(sc, 10, "sidecar");
    assert_eq!(sc.code, -1, "killed");
    let (app, took) = wait_within(app, 20, "sidecar exec");
    app.failure()
        .stderr_has("the sidecar is gone")
        .stderr_has("cannot upload its outputs");
    // Stale after 2 s, checked every heartbeat: well within 10 s.
    assert!(took < Duration::from_secs(10), "the wrapper took {took:?}");
    assert_eq!(pod.model_bundles(), 0);
}

#[test]
fn a_killed_app_is_noticed_by_the_sidecar_and_recorded_as_failed() {
    let pod = Pod::new();
    let sc = pod.standard_sidecar(&[]);
    let pidfile = pod.dm.path("cmd.pid");
    let app = pod.app(&format!("echo $$ > {}; exec sleep 60", pidfile.display()));
    wait_for_file(&pidfile);
    // The whole application container dies: the wrapper and its command.
    kill(app.id(), "KILL");
    let cmd_pid: u32 = std::fs::read_to_string(&pidfile)
        .expect("pid")
        .trim()
        .parse()
        .expect("a pid");
    kill(cmd_pid, "KILL");
    let _ = wait_within(app, 10, "sidecar exec");
    let (sc, took) = wait_within(sc, 20, "sidecar");
    sc.failure().stderr_has("the application is gone");
    assert!(took < Duration::from_secs(10), "the sidecar took {took:?}");
    let runs = pod.runs();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["status"], "failed");
    assert_eq!(pod.model_bundles(), 0);
}

#[test]
fn sigterm_unmounts_cleanly_and_stops_the_wrapper() {
    let pod = Pod::new();
    let mount = fuse_available();
    let sc = if mount {
        pod.standard_sidecar(&["--mount"])
    } else {
        pod.standard_sidecar(&[])
    };
    let pidfile = pod.dm.path("cmd.pid");
    let app = pod.app(&format!(
        "echo $$ > {}; cat $DATAMON_INPUT_RAW/a.txt >&2; exec sleep 60",
        pidfile.display()
    ));
    wait_for_file(&pidfile);
    let mounted = pod.coord().join("work/inputs/raw");
    if mount {
        assert!(is_mounted(&mounted), "the input is mounted");
    }
    kill(sc.id(), "TERM");
    let (sc, took) = wait_within(sc, 20, "sidecar");
    sc.code(143).stderr_has("stopped by signal 15");
    assert!(took < Duration::from_secs(10), "the sidecar took {took:?}");
    assert!(!is_mounted(&mounted), "the input is unmounted");
    let (app, took) = wait_within(app, 20, "sidecar exec");
    app.failure().stderr_has("hello").stderr_has("sidecar");
    assert!(took < Duration::from_secs(15), "the wrapper took {took:?}");
    let runs = pod.runs();
    assert_eq!(runs.len(), 1, "the stopped run is recorded as failed");
    assert_eq!(runs[0]["status"], "failed");
    assert_eq!(runs[0]["exit_code"], 143);
    assert_eq!(pod.model_bundles(), 0);
}

#[test]
fn bad_configuration_is_reported_and_told_to_the_wrapper() {
    let pod = Pod::new();
    let config = pod.dm.path("bad.yaml");
    write(&config, "step: train\ninputz: []\n");
    let sc = pod.sidecar(&["--config", config.to_str().expect("utf-8")]);
    let app = pod.app("touch ran");
    let (sc, _) = wait_within(sc, 30, "sidecar");
    let (app, _) = wait_within(app, 30, "sidecar exec");
    sc.failure()
        .stderr_has("bad configuration")
        .stderr_has("inputz");
    app.failure().stderr_has("inputz");
    // No coordination folder at all: said clearly.
    pod.dm
        .run(["sidecar", "exec", "--", "true"])
        .failure()
        .stderr_has("--coordination");
}

#[test]
fn localize_downloads_bundles_and_paths_into_folders() {
    let pod = Pod::new();
    let sub = pod.dm.dir("data2");
    write(&sub.join("x/y.txt"), "why\n");
    write(&sub.join("z.txt"), "zed\n");
    pod.dm.create_repo("code");
    let code = pod.dm.upload("code", &sub, "c1", &[]);
    let data_dir = pod.shared.join("data");
    let code_dir = pod.shared.join("code");
    let out = pod.dm.ok([
        "--json".to_owned(),
        "localize".to_owned(),
        "--input".to_owned(),
        format!("raw@main={}", data_dir.display()),
        "--input".to_owned(),
        format!("code@{code}:x={}", code_dir.display()),
    ]);
    let lines = out.json_lines();
    assert_eq!(lines.len(), 2, "{out:?}");
    assert_eq!(lines[1]["bundle"], code.as_str());
    assert_eq!(
        std::fs::read_to_string(data_dir.join("a.txt")).expect("a.txt"),
        "hello\n"
    );
    assert_eq!(
        std::fs::read_to_string(code_dir.join("x/y.txt")).expect("y.txt"),
        "why\n"
    );
    assert!(
        !code_dir.join("z.txt").exists(),
        "only the path was localized"
    );
    // A folder that is not empty is refused before anything is downloaded.
    pod.dm
        .run([
            "localize".to_owned(),
            "--input".to_owned(),
            format!("raw@main={}", data_dir.display()),
        ])
        .failure()
        .stderr_has("is not empty");
    // A selector that does not resolve: nothing is downloaded at all.
    let fresh = pod.shared.join("fresh");
    pod.dm
        .run([
            "localize".to_owned(),
            "--input".to_owned(),
            format!("raw@main={}", fresh.display()),
            "--input".to_owned(),
            format!("raw@nosuch={}", pod.shared.join("other").display()),
        ])
        .code(2)
        .stderr_has("nosuch");
    assert!(!fresh.join("a.txt").exists());
    pod.dm
        .run(["localize", "--input", "raw@main"])
        .failure()
        .stderr_has("REPO@SELECTOR[:PATH]=DIR");
}

#[test]
fn localize_fails_clearly_on_a_corrupted_store_and_leaves_the_folder_empty() {
    let pod = Pod::new();
    let big = pod.dm.dir("big");
    write_random(&big.join("blob.bin"), 7, 300_000);
    pod.dm.create_repo("big");
    let id = pod.dm.upload("big", &big, "b1", &[]);
    // Flip bytes in the middle of every data pack: chunks no longer match their hashes.
    let mut flipped = 0;
    for pack in pod.dm.pack_files() {
        let mut bytes = std::fs::read(&pack).expect("read pack");
        let n = bytes.len();
        if n < 100_000 {
            continue; // the packs of tree nodes: the data packs are what is flipped
        }
        flipped += 1;
        for b in &mut bytes[n / 3..n / 3 + 64] {
            *b ^= 0xff;
        }
        std::fs::write(&pack, bytes).expect("write pack");
    }
    assert!(flipped > 0, "no data pack found: {:?}", pod.dm.pack_files());
    let dest = pod.shared.join("big");
    let t0 = Instant::now();
    let out = pod.dm.run([
        "localize".to_owned(),
        "--retries".to_owned(),
        "2".to_owned(),
        "--backoff".to_owned(),
        "100ms".to_owned(),
        "--input".to_owned(),
        format!("big@{id}={}", dest.display()),
    ]);
    out.failure()
        .stderr_has("cannot localize input big@")
        .stderr_has("after 3 attempt(s)")
        .stderr_has("corrupt")
        .stderr_has("fsck");
    assert!(t0.elapsed() < Duration::from_secs(30));
    let left: Vec<_> = std::fs::read_dir(&dest)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "partial data left: {left:?}");
}

// The Argo WorkflowTemplate of deploy/argo/.

fn workflow() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/argo/pipeline.yaml");
    let text = std::fs::read_to_string(&path).expect("read the WorkflowTemplate");
    serde_norway::from_str(&text).expect("the WorkflowTemplate is YAML")
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().expect("a string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Replaces `{{...}}` references with their values; every reference must be known.
#[track_caller]
fn substitute(s: &str, values: &std::collections::BTreeMap<String, String>) -> String {
    let mut out = s.to_owned();
    while let Some(start) = out.find("{{") {
        let end = out[start..].find("}}").expect("a closed reference") + start;
        let name = out[start + 2..end].trim().to_owned();
        let v = values
            .get(&name)
            .unwrap_or_else(|| panic!("unknown reference {name} in {s:?}"));
        out.replace_range(start..end + 2, v);
    }
    out
}

#[test]
fn argo_workflow_template_is_well_formed() {
    let wf = workflow();
    assert_eq!(wf["apiVersion"], "argoproj.io/v1alpha1");
    assert_eq!(wf["kind"], "WorkflowTemplate");
    let spec = &wf["spec"];
    let templates = spec["templates"].as_array().expect("templates");
    let entry = spec["entrypoint"].as_str().expect("entrypoint");
    let dag = templates
        .iter()
        .find(|t| t["name"] == entry)
        .expect("the entrypoint template")["dag"]["tasks"]
        .as_array()
        .expect("a DAG")
        .clone();
    let names: Vec<&str> = dag
        .iter()
        .map(|t| t["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["prepare", "train", "evaluate"]);
    assert_eq!(dag[1]["depends"], "prepare");
    assert_eq!(dag[2]["depends"], "train");
    for task in &dag {
        let t = templates
            .iter()
            .find(|t| t["name"] == task["template"])
            .expect("the task's template exists");
        // The main container runs through the wrapper; the sidecar runs `datamon sidecar`
        // on the same coordination folder; both mount the shared volume at the same path.
        let main = strings(&t["container"]["command"]);
        assert_eq!(main[..3], ["/shared/datamon", "sidecar", "exec"], "{t}");
        let side = &t["sidecars"][0];
        let args = strings(&side["args"]);
        assert_eq!(args[0], "sidecar");
        let coord = |a: &[String]| {
            a.iter()
                .position(|x| x == "--coordination")
                .map(|i| a[i + 1].clone())
        };
        assert_eq!(coord(&args), coord(&main));
        assert_eq!(
            side["volumeMounts"][0]["mountPath"],
            t["container"]["volumeMounts"][0]["mountPath"]
        );
        // Every output parameter is an ids file the sidecar writes.
        for p in t["outputs"]["parameters"].as_array().expect("outputs") {
            let path = p["valueFrom"]["path"].as_str().expect("a path");
            assert!(path.starts_with("/shared/ids/"), "{path}");
        }
        // Every container has a name and an image (what a Pod needs).
        for c in [&t["container"], side, &t["initContainers"][0]] {
            assert!(c["image"].as_str().is_some_and(|i| !i.is_empty()), "{c}");
        }
    }
    // An input parameter of a task comes from an earlier task's output parameter.
    assert_eq!(
        dag[1]["arguments"]["parameters"][0]["value"],
        "{{tasks.prepare.outputs.parameters.prepared-id}}"
    );
}

/// Runs the DAG's steps in order, each as a simulated pod (a fresh shared folder, the sidecar
/// and the wrapper as processes) with the very arguments of the template, on a local store;
/// then checks the lineage of the final bundle.
#[test]
fn argo_dag_steps_run_in_order_locally_and_record_the_lineage() {
    let wf = workflow();
    let dm = Dm::new();
    for r in ["raw", "prepared", "model", "evaluation"] {
        dm.create_repo(r);
    }
    let raw = dm.dir("raw");
    write(&raw.join("a.csv"), "1,2\n");
    write(&raw.join("b-test.csv"), "3,4\n");
    let raw_id = dm.upload("raw", &raw, "raw v1", &[]);

    let spec = &wf["spec"];
    let mut values = std::collections::BTreeMap::new();
    for p in spec["arguments"]["parameters"].as_array().expect("params") {
        let name = p["name"].as_str().expect("name");
        values.insert(
            format!("workflow.parameters.{name}"),
            p["value"].as_str().expect("value").to_owned(),
        );
    }
    let templates = spec["templates"].as_array().expect("templates");
    let dag = templates
        .iter()
        .find(|t| t["name"] == "pipeline")
        .expect("dag")["dag"]["tasks"]
        .as_array()
        .expect("tasks")
        .clone();
    for (i, task) in dag.iter().enumerate() {
        let name = task["name"].as_str().expect("name");
        let t = templates
            .iter()
            .find(|t| t["name"] == task["template"])
            .expect("template");
        let mut local = values.clone();
        for p in task["arguments"]["parameters"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let v = substitute(p["value"].as_str().expect("value"), &values);
            local.insert(
                format!("inputs.parameters.{}", p["name"].as_str().expect("name")),
                v,
            );
        }
        // A fresh emptyDir per pod; /shared is that folder.
        let shared = dm.path(format!("pod-{i}-{name}"));
        std::fs::create_dir_all(&shared).expect("shared");
        let local_path = |s: String| s.replace("/shared", shared.to_str().expect("utf-8"));
        let side_args: Vec<String> = strings(&t["sidecars"][0]["args"])
            .iter()
            .map(|a| local_path(substitute(a, &local)))
            .collect();
        let mut sc = dm.command();
        sc.args(&side_args).env("DATAMON_IMAGE", "busybox:1.36");
        let sc = spawn(sc);
        let mut main: Vec<String> = strings(&t["container"]["command"]);
        main.extend(strings(&t["container"]["args"]));
        let main: Vec<String> = main
            .iter()
            .map(|a| local_path(substitute(a, &local)))
            .collect();
        // The binary the init container would have copied.
        let mut app = Command::new(bin());
        app.args(&main[1..]).stdin(Stdio::null());
        let (app, _) = wait_within(spawn(app), 120, name);
        let (sc, _) = wait_within(sc, 120, "sidecar");
        app.success();
        sc.success();
        for p in t["outputs"]["parameters"].as_array().expect("outputs") {
            let path = local_path(p["valueFrom"]["path"].as_str().expect("path").to_owned());
            let id = std::fs::read_to_string(&path).expect("the output parameter's file");
            assert_valid_id(&id);
            values.insert(
                format!(
                    "tasks.{name}.outputs.parameters.{}",
                    p["name"].as_str().expect("name")
                ),
                id,
            );
        }
    }
    let eval = values["tasks.evaluate.outputs.parameters.evaluation-id"].clone();
    let model = values["tasks.train.outputs.parameters.model-id"].clone();
    let prepared = values["tasks.prepare.outputs.parameters.prepared-id"].clone();
    let dest = dm.dir("eval");
    dm.download("evaluation", &eval, &dest);
    let got = std::fs::read_to_string(dest.join("evaluated.txt")).expect("evaluated.txt");
    assert_eq!(
        got, "b-test.csv\n4\nlr=0.1\n",
        "the steps saw each other's outputs"
    );
    // The lineage of the final bundle reaches the raw data through every step.
    let out = dm.ok([
        "bundle",
        "lineage",
        "--repo",
        "evaluation",
        "--bundle",
        &eval,
        "--upstream",
        "--format",
        "json",
    ]);
    for id in [&raw_id, &prepared, &model, &eval] {
        assert!(
            out.stdout.contains(id.as_str()),
            "{id} missing from the lineage: {out:?}"
        );
    }
    let runs = dm.ok(["--json", "run", "list"]).json_lines();
    let steps: Vec<&str> = runs
        .iter()
        .map(|r| r["step"].as_str().expect("step"))
        .collect();
    assert_eq!(steps, ["prepare", "train", "evaluate"]);
    assert!(runs.iter().all(|r| r["status"] == "succeeded"));
    assert_eq!(runs[1]["params"]["lr"], "0.1");
    assert_eq!(runs[2]["metrics"]["accuracy"], 0.9);
    assert_eq!(runs[0]["image"], "busybox:1.36");
}

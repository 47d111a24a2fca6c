//! Pipeline steps run through the library alone (`datamon::exec`), as the Python SDK and the pod
//! sidecar do: plan, materialize, run the caller's own code or a child process, finish. And the
//! commit of many concurrent uploads to one branch.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use datamon::{
    BranchName, CancellationToken, Datamon, ErrorKind, InputSpec, LineageDirection, LineageOptions,
    NoProgress, OutputSpec, Progress, RepoName, RunQuery, RunSpec, RunStatus, UploadContext,
    UploadOptions,
};

use super::{open, rt, upload, write};

fn repo(name: &str) -> RepoName {
    name.parse().unwrap()
}

/// A store with repo `raw` holding one bundle (`raw.txt`) and an empty repo `model`.
async fn setup(dm: &Datamon, src: &Path) -> datamon::Bundle {
    dm.create_repo(&repo("raw"), "raw data").await.unwrap();
    dm.create_repo(&repo("model"), "models").await.unwrap();
    write(&src.join("raw.txt"), b"1 2 3 4");
    upload(dm, "raw", src, "raw v1").await
}

fn spec(out: &Path) -> RunSpec {
    RunSpec {
        step: "train".into(),
        inputs: vec!["raw@latest".parse::<InputSpec>().unwrap()],
        outputs: vec![format!("model:{}", out.display())
            .parse::<OutputSpec>()
            .unwrap()],
        params: BTreeMap::from([("lr".to_owned(), "0.1".to_owned())]),
        command: vec!["in-process".into()],
        user: datamon::exec::capture_user(None),
        host: datamon::exec::capture_host(),
        ..Default::default()
    }
}

#[test]
fn a_pipeline_step_runs_in_process_without_the_cli() {
    let rt = rt();
    let tmp = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let dm = open(&format!("file://{}", tmp.path().join("store").display())).await;
        let raw = setup(&dm, &tmp.path().join("src")).await;
        let out = tmp.path().join("out");
        let mut plan = dm.plan_run(spec(&out)).await.unwrap();
        assert_eq!(plan.inputs()[0].bundle, raw.id);
        assert!(!out.exists(), "planning writes nothing");
        let ready = plan
            .materialize(&NoProgress, &CancellationToken::new())
            .await
            .unwrap()
            .to_vec();
        assert_eq!(ready[0].var, "DATAMON_INPUT_RAW");
        // The caller's own code: reads the input, writes the output and its metrics.
        let data = std::fs::read_to_string(ready[0].path.join("raw.txt")).unwrap();
        let sum: u32 = data.split(' ').map(|n| n.parse::<u32>().unwrap()).sum();
        std::fs::write(out.join("model.txt"), sum.to_string()).unwrap();
        let metrics = plan.metrics_file().unwrap();
        std::fs::write(&metrics, r#"{"loss": 0.25, "eval": {"acc": 0.9}}"#).unwrap();
        let work = plan.work_dir().unwrap().to_owned();
        assert!(work.exists());
        let id = plan.id();
        let result = plan
            .succeed(&NoProgress, &CancellationToken::new())
            .await
            .unwrap();
        assert!(
            !work.exists(),
            "the temporary work folder goes with the plan"
        );

        let run = dm.get_run(&id).await.unwrap();
        assert_eq!(run, result.run);
        assert_eq!(run.status, RunStatus::Succeeded);
        assert_eq!(run.params["lr"], "0.1");
        assert_eq!(run.metrics["eval.acc"], serde_json::json!(0.9));
        assert_ne!(run.user, "unknown");
        let model = run.outputs[0].bundle;
        assert_eq!(result.uploads[0].bundle.id, model);
        let files = dm.list_files(&repo("model"), &model).await.unwrap();
        assert_eq!(files.len(), 1);
        let b = dm.get_bundle(&repo("model"), &model).await.unwrap();
        assert_eq!(b.meta[datamon::META_RUN], id.to_string());
        // Lineage: the model came from the raw bundle through this run.
        let l = dm
            .lineage(
                &repo("model"),
                &model,
                LineageOptions {
                    direction: LineageDirection::Upstream,
                    depth: None,
                },
            )
            .await
            .unwrap();
        assert!(l.bundles.iter().any(|x| x.id == raw.id), "{l:?}");
    });
}

#[test]
fn a_child_process_step_gets_the_environment_and_substitutions() {
    let rt = rt();
    let tmp = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let dm = open("memory://pipeline-child").await;
        setup(&dm, &tmp.path().join("src")).await;
        let out = tmp.path().join("out");
        let mut plan = dm.plan_run(spec(&out)).await.unwrap();
        let stop = CancellationToken::new();
        plan.materialize(&NoProgress, &stop).await.unwrap();
        let argv: Vec<String> = [
            "sh",
            "-c",
            "cat {input:raw}/raw.txt > {output:model}/copy; echo $DATAMON_PARAM_LR $DATAMON_STEP > $DATAMON_OUTPUT_MODEL/env",
        ]
        .map(String::from)
        .to_vec();
        let code = plan
            .run_command(&argv, std::process::Stdio::null(), &stop)
            .await
            .unwrap();
        assert_eq!(code, 0);
        assert_eq!(std::fs::read(out.join("copy")).unwrap(), b"1 2 3 4");
        assert_eq!(
            std::fs::read_to_string(out.join("env")).unwrap(),
            "0.1 train\n"
        );
        let failing = ["sh", "-c", "exit 3"].map(String::from).to_vec();
        assert_eq!(
            plan.run_command(&failing, std::process::Stdio::null(), &stop)
                .await
                .unwrap(),
            3
        );
        let missing = ["no-such-command-xyz"].map(String::from).to_vec();
        let err = plan
            .run_command(&missing, std::process::Stdio::null(), &stop)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no-such-command-xyz"), "{err}");
        assert!(!err.to_string().contains("--"), "no CLI flags: {err}");
    });
}

#[test]
fn a_failed_step_is_recorded_and_uploads_nothing() {
    let rt = rt();
    let tmp = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let dm = open("memory://pipeline-failed").await;
        setup(&dm, &tmp.path().join("src")).await;
        let out = tmp.path().join("out");
        let mut plan = dm.plan_run(spec(&out)).await.unwrap();
        plan.materialize(&NoProgress, &CancellationToken::new())
            .await
            .unwrap();
        std::fs::write(out.join("half"), b"written before the failure").unwrap();
        let run = plan.fail(3).await.unwrap();
        assert_eq!(run.status, RunStatus::Failed);
        assert_eq!(run.exit_code, Some(3));
        assert!(run.outputs.is_empty());
        assert_eq!(dm.get_run(&run.id).await.unwrap(), run);
        assert!(dm.list_bundles(&repo("model")).await.unwrap().is_empty());
    });
}

#[test]
fn plans_check_everything_before_anything_runs() {
    let rt = rt();
    let tmp = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let dm = open("memory://pipeline-plan").await;
        setup(&dm, &tmp.path().join("src")).await;
        let out = tmp.path().join("out");
        let mut bad = spec(&out);
        bad.inputs = vec!["nosuch@latest".parse().unwrap()];
        let err = dm.plan_run(bad).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(err.to_string().contains("nosuch"), "{err}");
        let mut bad = spec(&out);
        bad.outputs = vec!["nomodel:out".parse().unwrap()];
        assert_eq!(
            dm.plan_run(bad).await.unwrap_err().kind(),
            ErrorKind::NotFound
        );
        let mut bad = spec(&out);
        bad.step = " ".into();
        assert_eq!(
            dm.plan_run(bad).await.unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        let file = tmp.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        let mut bad = spec(&out);
        bad.outputs = vec![format!("model:{}", file.display()).parse().unwrap()];
        assert_eq!(
            dm.plan_run(bad).await.unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        assert!(dm.list_runs(&RunQuery::default()).await.unwrap().is_empty());
        assert!(!out.exists());
    });
}

#[test]
fn a_cancelled_step_records_nothing() {
    let rt = rt();
    let tmp = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let dm = open("memory://pipeline-cancel").await;
        setup(&dm, &tmp.path().join("src")).await;
        let out = tmp.path().join("out");
        let cancel = CancellationToken::new();
        cancel.cancel();
        let mut plan = dm.plan_run(spec(&out)).await.unwrap();
        let err = plan.materialize(&NoProgress, &cancel).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
        let mut plan = dm.plan_run(spec(&out)).await.unwrap();
        plan.materialize(&NoProgress, &CancellationToken::new())
            .await
            .unwrap();
        let err = plan.succeed(&NoProgress, &cancel).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
        assert!(dm.list_runs(&RunQuery::default()).await.unwrap().is_empty());
        assert!(dm.list_bundles(&repo("model")).await.unwrap().is_empty());
    });
}

/// Cancels its token once the first bytes are read, and counts what was read.
struct CancelOnFirstChunk {
    cancel: CancellationToken,
    read: AtomicU64,
}

impl Progress for CancelOnFirstChunk {
    fn advance(&self, n: u64) {
        self.read.fetch_add(n, Ordering::Relaxed);
        self.cancel.cancel();
    }
}

#[test]
fn a_cancelled_upload_stops_while_it_is_still_reading_files() {
    let rt = rt();
    let tmp = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let dm = open("memory://pipeline-upload-cancel").await;
        dm.create_repo(&repo("big"), "d").await.unwrap();
        let src = tmp.path().join("src");
        let total: u64 = 64 * 1024 * 1024;
        for i in 0..64u32 {
            let data: Vec<u8> = (0..1024 * 1024u32)
                .map(|j| (j.wrapping_mul(2_654_435_761).wrapping_add(i) >> 7) as u8)
                .collect();
            write(&src.join(format!("f{i:02}")), &data);
        }
        let progress = CancelOnFirstChunk {
            cancel: CancellationToken::new(),
            read: AtomicU64::new(0),
        };
        let opts = UploadOptions {
            cancel: progress.cancel.clone(),
            ..Default::default()
        };
        let ctx = UploadContext {
            repo: repo("big"),
            path: src,
            message: "m".into(),
        };
        let err = dm.upload(ctx, opts, &progress).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
        let read = progress.read.load(Ordering::Relaxed);
        assert!(read < total / 4, "stopped after {read} of {total} bytes");
        assert!(dm.list_bundles(&repo("big")).await.unwrap().is_empty());
    });
}

#[test]
fn concurrent_uploads_to_one_branch_form_one_line() {
    let rt = rt();
    let tmp = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let dm = open(&format!("file://{}", tmp.path().join("store").display())).await;
        dm.create_repo(&repo("c"), "d").await.unwrap();
        let branch: BranchName = "conc".parse().unwrap();
        let mut tasks = Vec::new();
        for i in 0..16 {
            let dm = dm.clone();
            let src = tmp.path().join(format!("src{i}"));
            write(&src.join("f"), format!("file {i}").as_bytes());
            let branch = branch.clone();
            tasks.push(tokio::spawn(async move {
                let ctx = UploadContext {
                    repo: "c".parse().unwrap(),
                    path: src,
                    message: format!("upload {i}"),
                };
                let opts = UploadOptions {
                    branch: Some(branch),
                    ..Default::default()
                };
                dm.upload(ctx, opts, &NoProgress).await.unwrap().bundle
            }));
        }
        let mut uploaded = Vec::new();
        for t in tasks {
            uploaded.push(t.await.unwrap());
        }
        let log = dm.log(&repo("c"), Some(&branch), None).await.unwrap();
        assert_eq!(log.len(), 16, "every bundle is on the line");
        for pair in log.windows(2) {
            assert_eq!(pair[0].bundle.parents, vec![pair[1].bundle.id]);
        }
        assert!(log[15].bundle.parents.is_empty());
        // What each upload returned is what is stored.
        for b in &uploaded {
            assert_eq!(&dm.get_bundle(&repo("c"), &b.id).await.unwrap(), b);
        }
    });
}

//! Generates a store with many runs and bundle records, to time `run diff`, `bundle lineage`
//! and `log` at scale (see `bench/lineage.sh`).
//!
//! ```text
//! cargo run --release -p datamon --example lineage-gen -- file:///tmp/lineage-store 10000 100000
//! ```
//!
//! Layout: two real bundles are uploaded to `raw-00` (two versions of a small folder that differ
//! in one file); every other bundle record reuses one of their two root trees, so any two
//! bundles can be diffed for real. Ten `raw-NN` repos hold the data snapshots (one long branch
//! each); the runs form prepare -> train -> evaluate chains: prepare reads a `raw-NN` bundle and
//! writes `features`, train reads that and writes `model` (parameter `lr`), evaluate reads the
//! model and writes `eval` (metric `acc`). Records are written directly with create-if-absent,
//! not through uploads, for speed.
//!
//! With a fourth argument STEPS (3 to 8), the runs form a parameter grid instead, for
//! `bench/compare.sh`: each pass reads one bundle of a `raw-NN` repo (pass p: repo p mod 10,
//! its bundle number (p / 10) mod 4, so the same repo is read in four versions), runs the steps
//! before train once (`prepare`, then `featurize`, `featurize-2`... each with one fixed
//! parameter), `train` once per learning rate (`lr` 0.1 to 0.5, `epochs` 3), and the steps after
//! it (`evaluate`, metric `acc`; with 4 steps or more `report`, metric `score`) once per model.
//! The code version changes every 40 passes. The ids printed for the script: `DEEP_A` and
//! `DEEP_B`, two runs of the last step that differ only in the raw bundle at the first step.
#![allow(clippy::disallowed_methods)] // writes its own scratch fixtures

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{Duration, Utc};
use datamon::{
    BranchName, Bundle, BundleId, BundleStats, CodeVersion, Datamon, NoProgress, OpenOptions,
    RepoName, Run, RunId, RunInput, RunOutput, RunStatus, UploadContext, UploadOptions,
};
use datamon_store::keys;
use datamon_types::BranchRecord;
use futures::{StreamExt, TryStreamExt};

const RAW_REPOS: usize = 10;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .ok_or("usage: lineage-gen STORE_URL [RUNS] [BUNDLES] [STEPS]")?
        .clone();
    let runs: usize = args.get(2).map_or(Ok(10_000), |s| s.parse())?;
    let bundles: usize = args.get(3).map_or(Ok(100_000), |s| s.parse())?;
    let steps: Option<usize> = args.get(4).map(|s| s.parse()).transpose()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match steps {
        Some(n) if (3..=8).contains(&n) => rt.block_on(generate_grid(&url, runs, bundles, n)),
        Some(n) => Err(format!("STEPS is 3 to 8, not {n}").into()),
        None => rt.block_on(generate(&url, runs, bundles)),
    }
}

fn name(s: &str) -> RepoName {
    s.parse().expect("valid repo name")
}

async fn generate(
    url: &str,
    n_runs: usize,
    n_bundles: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let t0 = Instant::now();
    let dm = Datamon::open(
        url,
        OpenOptions {
            author: Some("bench".into()),
            ..Default::default()
        },
    )
    .await?;
    let store = dm.store().clone();
    let mut repos: Vec<RepoName> = (0..RAW_REPOS)
        .map(|i| name(&format!("raw-{i:02}")))
        .collect();
    repos.extend(["features", "model", "eval"].map(name));
    for r in &repos {
        dm.create_repo(r, "lineage benchmark").await?;
    }

    // Two real bundles, for real trees.
    let dir = std::env::temp_dir().join(format!("lineage-gen-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    for i in 0..20 {
        std::fs::write(
            dir.join(format!("f{i:02}.csv")),
            format!("row,{i}\n").repeat(100),
        )?;
    }
    let mut roots = Vec::new();
    for v in 0..2 {
        std::fs::write(dir.join("f07.csv"), format!("changed,{v}\n"))?;
        let r = dm
            .upload(
                UploadContext {
                    repo: repos[0].clone(),
                    path: dir.clone(),
                    message: format!("real v{v}"),
                },
                UploadOptions::default(),
                &NoProgress,
            )
            .await?;
        roots.push(r.bundle.clone());
    }
    std::fs::remove_dir_all(&dir)?;

    // Bundle records: the run outputs (features, model, eval: one per run), the rest spread
    // over the raw repos, each repo one chain of parents.
    let n_raw = n_bundles.saturating_sub(n_runs).max(RAW_REPOS);
    let start = Utc::now() - Duration::days(365);
    let mut heads: BTreeMap<RepoName, BundleId> = BTreeMap::new();
    heads.insert(repos[0].clone(), roots[1].id);
    let mut records: Vec<Bundle> = Vec::with_capacity(n_bundles);
    let mut make = |repo: &RepoName, i: usize, meta: BTreeMap<String, String>| {
        let parent = heads.get(repo).copied();
        let b = Bundle {
            id: BundleId::generate(),
            repo: repo.clone(),
            parents: parent.into_iter().collect(),
            branch: Some("main".parse().expect("valid")),
            message: format!("snapshot {i}"),
            author: "bench".into(),
            created_at: start + Duration::seconds(i as i64 * 60),
            root: roots[i % 2].root,
            stats: BundleStats {
                files: 20,
                bytes: 20_000,
                ..Default::default()
            },
            meta,
        };
        heads.insert(repo.clone(), b.id);
        b
    };
    let mut raw_ids: Vec<Vec<BundleId>> = vec![Vec::new(); RAW_REPOS];
    for i in 0..n_raw {
        let r = i % RAW_REPOS;
        let meta = BTreeMap::from([("dataset".to_owned(), format!("set-{}", i % 7))]);
        let b = make(&repos[r], i, meta);
        raw_ids[r].push(b.id);
        records.push(b);
    }
    let mut runs: Vec<Run> = Vec::with_capacity(n_runs);
    let steps = ["prepare", "train", "evaluate"];
    let mut last: Option<(RepoName, BundleId)> = None;
    for i in 0..n_runs {
        let step = steps[i % 3];
        let input = match (step, &last) {
            ("prepare", _) | (_, None) => {
                let r = (i / 3) % RAW_REPOS;
                let ids = &raw_ids[r];
                (repos[r].clone(), ids[(i / 3 / RAW_REPOS) % ids.len()])
            }
            (_, Some(l)) => l.clone(),
        };
        let out_repo = match step {
            "prepare" => name("features"),
            "train" => name("model"),
            _ => name("eval"),
        };
        let id = RunId::generate();
        let meta = BTreeMap::from([
            (datamon::META_RUN.to_owned(), id.to_string()),
            (datamon::META_STEP.to_owned(), step.to_owned()),
        ]);
        let b = make(&out_repo, n_raw + i, meta);
        let t = start + Duration::seconds(i as i64 * 30);
        runs.push(Run {
            id,
            step: step.into(),
            status: RunStatus::Succeeded,
            exit_code: Some(0),
            command: vec!["python".into(), format!("{step}.py")],
            code: CodeVersion {
                git_commit: Some(format!("{:040x}", i / 30)),
                git_dirty: Some(false),
                image: None,
            },
            host: "bench".into(),
            user: "bench".into(),
            started_at: t,
            finished_at: t + Duration::seconds(20),
            params: BTreeMap::from([("lr".to_owned(), format!("0.{}", i % 5 + 1))]),
            inputs: vec![RunInput {
                repo: input.0,
                bundle: input.1,
                selector: None,
                path: None,
            }],
            outputs: vec![RunOutput {
                repo: out_repo.clone(),
                bundle: b.id,
            }],
            metrics: BTreeMap::from([(
                "acc".to_owned(),
                serde_json::json!((i % 100) as f64 / 100.0),
            )]),
            meta: BTreeMap::new(),
        });
        last = if step == "evaluate" {
            None
        } else {
            Some((out_repo, b.id))
        };
        records.push(b);
    }
    println!(
        "generated {} bundle records and {} runs in memory",
        records.len(),
        runs.len()
    );

    let store = &store;
    futures::stream::iter(records.iter().map(|b| async move {
        store
            .create_json(&keys::bundle(b.repo.as_str(), &b.id), b)
            .await
    }))
    .buffer_unordered(64)
    .try_collect::<Vec<()>>()
    .await?;
    println!("wrote bundle records: {:.1?}", t0.elapsed());
    futures::stream::iter(
        runs.iter()
            .map(|r| async move { store.create_json(&keys::run(&r.id), r).await }),
    )
    .buffer_unordered(64)
    .try_collect::<Vec<()>>()
    .await?;
    println!("wrote run records: {:.1?}", t0.elapsed());
    let main: BranchName = "main".parse()?;
    for (repo, head) in &heads {
        let rec = BranchRecord {
            head: Some(*head),
            previous: None,
            author: "bench".into(),
            time: Utc::now(),
        };
        let prefix = keys::branch(repo.as_str(), main.as_str());
        let next = store
            .last_record::<BranchRecord>(&prefix)
            .await?
            .map_or(1, |(s, _)| s + 1);
        store.create_json(&keys::seq(&prefix, next), &rec).await?;
    }
    // Ids for the timing script: two train runs (same chain position, different inputs and
    // params), the last eval bundle, a raw bundle.
    // RUN_B's input has the other root, so `run diff` shows a real file-level change.
    let roots_by_id: std::collections::HashMap<BundleId, datamon::Hash> =
        records.iter().map(|b| (b.id, b.root)).collect();
    let input_root = |r: &Run| roots_by_id.get(&r.inputs[0].bundle).copied();
    let trains: Vec<&Run> = runs.iter().filter(|r| r.step == "train").collect();
    if let Some(a) = trains.first() {
        println!("RUN_A={}", a.id);
        let b = trains
            .iter()
            .rev()
            .find(|b| input_root(b) != input_root(a))
            .unwrap_or(a);
        println!("RUN_B={}", b.id);
    }
    if let Some(e) = heads.get(&name("eval")) {
        println!("EVAL_BUNDLE={e}");
    }
    println!("RAW_BUNDLE={}", raw_ids[0][0]);
    println!("done in {:.1?}", t0.elapsed());
    Ok(())
}

/// The learning rates of the grid layout.
const LRS: [&str; 5] = ["0.1", "0.2", "0.3", "0.4", "0.5"];
/// How many versions of a raw repo the grid layout's passes read.
const VERSIONS: usize = 4;
/// The grid layout's code version changes every this many passes.
const CODE_EVERY: usize = 40;

/// The grid layout (see the module docs): `steps` steps, passes over a parameter grid.
async fn generate_grid(
    url: &str,
    n_runs: usize,
    n_bundles: usize,
    steps: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let t0 = Instant::now();
    let dm = Datamon::open(
        url,
        OpenOptions {
            author: Some("bench".into()),
            ..Default::default()
        },
    )
    .await?;
    let store = dm.store().clone();
    // Step names: prepare, featurize..., train, evaluate[, report].
    let post = if steps >= 4 { 2 } else { 1 };
    let pre = steps - 1 - post;
    let mut names: Vec<String> = vec!["prepare".into()];
    for k in 1..pre {
        names.push(if k == 1 {
            "featurize".into()
        } else {
            format!("featurize-{k}")
        });
    }
    names.push("train".into());
    names.push("evaluate".into());
    if post == 2 {
        names.push("report".into());
    }
    let out_repo: Vec<RepoName> = names.iter().map(|n| name(&format!("out-{n}"))).collect();
    let raw_repos: Vec<RepoName> = (0..RAW_REPOS)
        .map(|i| name(&format!("raw-{i:02}")))
        .collect();
    for r in raw_repos.iter().chain(&out_repo) {
        dm.create_repo(r, "compare benchmark").await?;
    }

    // Two real bundles, for real trees (any two records with different roots diff for real).
    let dir = std::env::temp_dir().join(format!("compare-gen-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    for i in 0..20 {
        std::fs::write(
            dir.join(format!("f{i:02}.csv")),
            format!("row,{i}\n").repeat(100),
        )?;
    }
    let mut roots = Vec::new();
    for v in 0..2 {
        std::fs::write(dir.join("f07.csv"), format!("changed,{v}\n"))?;
        let r = dm
            .upload(
                UploadContext {
                    repo: raw_repos[0].clone(),
                    path: dir.clone(),
                    message: format!("real v{v}"),
                },
                UploadOptions::default(),
                &NoProgress,
            )
            .await?;
        roots.push(r.bundle.clone());
    }
    std::fs::remove_dir_all(&dir)?;

    let per_pass = pre + LRS.len() * (1 + post);
    let passes = (n_runs / per_pass).max(1);
    let n_raw = n_bundles
        .saturating_sub(passes * per_pass)
        .max(RAW_REPOS * VERSIONS);
    let start = Utc::now() - Duration::days(365);
    let mut heads: BTreeMap<RepoName, BundleId> = BTreeMap::new();
    heads.insert(raw_repos[0].clone(), roots[1].id);
    let mut records: Vec<Bundle> = Vec::with_capacity(n_raw + passes * per_pass);
    let mut seq = 0usize;
    // A bundle's content (one of the two real trees) follows the raw version it derives from,
    // so two passes over different versions differ at every step.
    let mut make = |repo: &RepoName, meta: BTreeMap<String, String>, root: usize| {
        seq += 1;
        let parent = heads.get(repo).copied();
        let b = Bundle {
            id: BundleId::generate(),
            repo: repo.clone(),
            parents: parent.into_iter().collect(),
            branch: Some("main".parse().expect("valid")),
            message: format!("snapshot {seq}"),
            author: "bench".into(),
            created_at: start + Duration::seconds(seq as i64 * 3),
            root: roots[root % 2].root,
            stats: BundleStats {
                files: 20,
                bytes: 20_000,
                ..Default::default()
            },
            meta,
        };
        heads.insert(repo.clone(), b.id);
        b
    };
    let mut raw_ids: Vec<Vec<BundleId>> = vec![Vec::new(); RAW_REPOS];
    for i in 0..n_raw {
        let r = i % RAW_REPOS;
        let meta = BTreeMap::from([("dataset".to_owned(), format!("set-{}", i % 7))]);
        let b = make(&raw_repos[r], meta, i / RAW_REPOS);
        raw_ids[r].push(b.id);
        records.push(b);
    }

    let mut runs: Vec<Run> = Vec::with_capacity(passes * per_pass);
    let mut clock = start;
    let mut last_step: Vec<(usize, usize, RunId)> = Vec::new(); // (pass, lr index, run)
    for p in 0..passes {
        let r = p % RAW_REPOS;
        let version = (p / RAW_REPOS) % VERSIONS;
        let code = CodeVersion {
            git_commit: Some(format!("{:040x}", p / CODE_EVERY)),
            git_dirty: Some(false),
            image: None,
        };
        let mut run = |step: usize,
                       params: &[(&str, String)],
                       input: (RepoName, BundleId),
                       metrics: BTreeMap<String, serde_json::Value>,
                       records: &mut Vec<Bundle>,
                       runs: &mut Vec<Run>|
         -> (RunId, BundleId) {
            let id = RunId::generate();
            let meta = BTreeMap::from([
                (datamon::META_RUN.to_owned(), id.to_string()),
                (datamon::META_STEP.to_owned(), names[step].clone()),
            ]);
            let b = make(&out_repo[step], meta, version);
            clock += Duration::seconds(30);
            runs.push(Run {
                id,
                step: names[step].clone(),
                status: RunStatus::Succeeded,
                exit_code: Some(0),
                command: vec!["python".into(), format!("{}.py", names[step])],
                code: code.clone(),
                host: "bench".into(),
                user: "bench".into(),
                started_at: clock,
                finished_at: clock + Duration::seconds(20),
                params: params
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.clone()))
                    .collect(),
                inputs: vec![RunInput {
                    repo: input.0,
                    bundle: input.1,
                    selector: None,
                    path: None,
                }],
                outputs: vec![RunOutput {
                    repo: out_repo[step].clone(),
                    bundle: b.id,
                }],
                metrics,
                meta: BTreeMap::new(),
            });
            let out = b.id;
            records.push(b);
            (id, out)
        };
        let mut input = (raw_repos[r].clone(), raw_ids[r][version]);
        for (s, repo) in out_repo.iter().enumerate().take(pre) {
            let (_, out) = run(
                s,
                &[("scale", "1".into())],
                input,
                BTreeMap::new(),
                &mut records,
                &mut runs,
            );
            input = (repo.clone(), out);
        }
        for (k, lr) in LRS.iter().enumerate() {
            let (_, model) = run(
                pre,
                &[("lr", (*lr).to_owned()), ("epochs", "3".into())],
                input.clone(),
                BTreeMap::from([("loss".to_owned(), serde_json::json!(1.0 - 0.1 * k as f64))]),
                &mut records,
                &mut runs,
            );
            let mut next = (out_repo[pre].clone(), model);
            for (s, repo) in out_repo.iter().enumerate().skip(pre + 1) {
                let metric = if s == pre + 1 { "acc" } else { "score" };
                let value = (50.0 + 5.0 * k as f64 + version as f64) / 100.0;
                let (id, out) = run(
                    s,
                    &[],
                    next,
                    BTreeMap::from([(metric.to_owned(), serde_json::json!(value))]),
                    &mut records,
                    &mut runs,
                );
                next = (repo.clone(), out);
                if s == steps - 1 {
                    last_step.push((p, k, id));
                }
            }
        }
    }
    println!(
        "generated {} bundle records and {} runs in memory ({passes} passes of {} steps)",
        records.len(),
        runs.len(),
        steps
    );
    let store = &store;
    futures::stream::iter(records.iter().map(|b| async move {
        store
            .create_json(&keys::bundle(b.repo.as_str(), &b.id), b)
            .await
    }))
    .buffer_unordered(64)
    .try_collect::<Vec<()>>()
    .await?;
    println!("wrote bundle records: {:.1?}", t0.elapsed());
    futures::stream::iter(
        runs.iter()
            .map(|r| async move { store.create_json(&keys::run(&r.id), r).await }),
    )
    .buffer_unordered(64)
    .try_collect::<Vec<()>>()
    .await?;
    println!("wrote run records: {:.1?}", t0.elapsed());
    let main: BranchName = "main".parse()?;
    for (repo, head) in &heads {
        let rec = BranchRecord {
            head: Some(*head),
            previous: None,
            author: "bench".into(),
            time: Utc::now(),
        };
        let prefix = keys::branch(repo.as_str(), main.as_str());
        let next = store
            .last_record::<BranchRecord>(&prefix)
            .await?
            .map_or(1, |(s, _)| s + 1);
        store.create_json(&keys::seq(&prefix, next), &rec).await?;
    }
    // Two runs of the last step: passes 0 and 10 read raw-00 in versions 0 and 1, with the same
    // code (passes 0 to 39) and the same lr.
    let pick = |pass: usize| {
        last_step
            .iter()
            .find(|(p, k, _)| *p == pass && *k == 2)
            .map(|(_, _, id)| *id)
    };
    if let (Some(a), Some(b)) = (pick(0), pick(RAW_REPOS)) {
        println!("DEEP_A={a}");
        println!("DEEP_B={b}");
    }
    println!("LAST_STEP={}", names[steps - 1]);
    println!("TRAIN_INPUT={}", out_repo[pre - 1]);
    println!("done in {:.1?}", t0.elapsed());
    Ok(())
}

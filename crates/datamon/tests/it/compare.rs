//! Queries across runs through the library: a synthetic pipeline (prepare -> train -> evaluate)
//! run over a grid of parameters and two raw-data versions, then `compare_runs`, `vary_runs`
//! and `diff_runs_deep`.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{Duration, Utc};
use datamon::{
    BundleId, CauseKind, CodeVersion, CompareQuery, Component, ComponentKind, Datamon, DeepOptions,
    ErrorKind, InputOrigin, LabelName, OpenOptions, RepoName, Run, RunFilter, RunId, RunInput,
    RunOutput, RunSort, RunStatus, Variation,
};

use super::{open, rt, upload, write};

fn repo(name: &str) -> RepoName {
    name.parse().unwrap()
}

/// Records runs with real bundles, one second apart (so "oldest first" is well defined).
struct Pipeline {
    dm: Datamon,
    dirs: tempfile::TempDir,
    n: usize,
    clock: chrono::DateTime<Utc>,
}

impl Pipeline {
    async fn new(dm: Datamon) -> Pipeline {
        for r in ["raw", "prepared", "model", "eval"] {
            dm.create_repo(&repo(r), r).await.unwrap();
        }
        Pipeline {
            dm,
            dirs: tempfile::tempdir().unwrap(),
            n: 0,
            clock: Utc::now() - Duration::hours(1),
        }
    }

    /// Uploads a folder holding `files` to `repo`.
    async fn bundle(&mut self, repo: &str, files: &[(&str, String)]) -> BundleId {
        self.n += 1;
        let dir = self.dirs.path().join(format!("b{}", self.n));
        for (name, content) in files {
            write(&dir.join(name), content.as_bytes());
        }
        upload(&self.dm, repo, &dir, &format!("{repo} {}", self.n))
            .await
            .id
    }

    #[allow(clippy::too_many_arguments)]
    async fn run(
        &mut self,
        step: &str,
        code: &str,
        params: &[(&str, &str)],
        inputs: &[(&str, BundleId, Option<&str>)],
        outputs: &[(&str, BundleId)],
        metrics: serde_json::Value,
    ) -> RunId {
        self.clock += Duration::seconds(1);
        let run = Run {
            id: RunId::generate(),
            step: step.into(),
            status: RunStatus::Succeeded,
            exit_code: Some(0),
            command: vec![format!("{step}.py")],
            code: CodeVersion {
                git_commit: Some(code.into()),
                git_dirty: Some(false),
                image: None,
            },
            host: "h".into(),
            user: "u".into(),
            started_at: self.clock,
            finished_at: self.clock,
            params: params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            inputs: inputs
                .iter()
                .map(|(r, b, p)| RunInput {
                    repo: repo(r),
                    bundle: *b,
                    selector: None,
                    path: p.map(str::to_owned),
                })
                .collect(),
            outputs: outputs
                .iter()
                .map(|(r, b)| RunOutput {
                    repo: repo(r),
                    bundle: *b,
                })
                .collect(),
            metrics: serde_json::from_value::<BTreeMap<String, serde_json::Value>>(metrics)
                .unwrap(),
            meta: BTreeMap::new(),
        };
        self.dm.record_run(&run).await.unwrap();
        run.id
    }

    /// prepare: upper-cases the raw files.
    async fn prepare(&mut self, raw: BundleId, raw_text: &str, rerun: bool) -> (RunId, BundleId) {
        let mut content = raw_text.to_uppercase();
        if rerun {
            content.push_str("# not reproducible\n");
        }
        let out = self.bundle("prepared", &[("data.csv", content)]).await;
        let id = self
            .run(
                "prepare",
                "c1",
                &[("scale", "1")],
                &[("raw", raw, None)],
                &[("prepared", out)],
                serde_json::json!({}),
            )
            .await;
        (id, out)
    }

    /// train: the model names its parameters and input.
    async fn train(
        &mut self,
        code: &str,
        prepared: BundleId,
        lr: &str,
        epochs: &str,
    ) -> (RunId, BundleId) {
        let out = self
            .bundle(
                "model",
                &[(
                    "model.txt",
                    format!("lr={lr} epochs={epochs} code={code} data={prepared}\n"),
                )],
            )
            .await;
        let id = self
            .run(
                "train",
                code,
                &[("lr", lr), ("epochs", epochs)],
                &[("prepared", prepared, None)],
                &[("model", out)],
                serde_json::json!({"loss": 1.0 - lr.parse::<f64>().unwrap()}),
            )
            .await;
        (id, out)
    }

    /// evaluate: reads `model.txt` of the model; acc depends on lr and the raw version.
    async fn evaluate(&mut self, model: BundleId, acc: f64) -> RunId {
        let out = self
            .bundle("eval", &[("score.txt", format!("{acc}\n"))])
            .await;
        self.run(
            "evaluate",
            "c1",
            &[],
            &[("model", model, Some("model.txt"))],
            &[("eval", out)],
            serde_json::json!({"acc": acc}),
        )
        .await
    }
}

const LRS: [&str; 3] = ["0.1", "0.2", "0.3"];

/// The grid: two raw versions (v2 changes one of two files), each prepared once, trained with
/// every lr (epochs 3), each model evaluated. Plus two odd train runs: lr 0.4 with epochs 5 on
/// v1 (differs in two components from everything), and lr 0.1 on v2 with code c2.
struct Grid {
    raw: [BundleId; 2],
    /// train[version][lr index]
    train: [[RunId; 3]; 2],
    /// evaluate[version][lr index]
    evaluate: [[RunId; 3]; 2],
    odd_epochs: RunId,
    odd_code: RunId,
    prepare: [RunId; 2],
}

async fn grid(p: &mut Pipeline) -> Grid {
    let texts = ["a,1\nb,2\n", "a,1\nb,3\n"];
    let mut raw = Vec::new();
    let mut prepared = Vec::new();
    let mut prepare = Vec::new();
    for t in texts {
        let r = p.bundle("raw", &[("data.csv", t.to_owned())]).await;
        let (run, out) = p.prepare(r, t, false).await;
        raw.push(r);
        prepared.push(out);
        prepare.push(run);
    }
    let mut train = [[RunId::generate(); 3]; 2];
    let mut evaluate = [[RunId::generate(); 3]; 2];
    for v in 0..2 {
        for (i, lr) in LRS.iter().enumerate() {
            let (t, model) = p.train("c1", prepared[v], lr, "3").await;
            train[v][i] = t;
            let acc = 0.5 + lr.parse::<f64>().unwrap() + 0.05 * v as f64;
            evaluate[v][i] = p.evaluate(model, (acc * 100.0).round() / 100.0).await;
        }
    }
    let (odd_epochs, m) = p.train("c1", prepared[0], "0.4", "5").await;
    p.evaluate(m, 0.7).await;
    let (odd_code, m) = p.train("c2", prepared[1], "0.1", "3").await;
    p.evaluate(m, 0.66).await;
    Grid {
        raw: [raw[0], raw[1]],
        train,
        evaluate,
        odd_epochs,
        odd_code,
        prepare: [prepare[0], prepare[1]],
    }
}

fn step(s: &str) -> CompareQuery {
    CompareQuery {
        step: Some(s.into()),
        ..Default::default()
    }
}

/// Each group's runs as (value of the varying component, run id).
fn groups(v: &Variation) -> Vec<Vec<(String, RunId)>> {
    v.groups
        .iter()
        .map(|g| {
            g.runs
                .iter()
                .map(|r| {
                    let value: Vec<String> = r
                        .value
                        .iter()
                        .map(|x| x.clone().unwrap_or_default())
                        .collect();
                    (value.join(","), r.run.id)
                })
                .collect()
        })
        .collect()
}

fn names(v: &Variation) -> Vec<String> {
    v.varies.iter().map(ToString::to_string).collect()
}

fn left_by(v: &Variation) -> Vec<(String, usize)> {
    v.left_out
        .by
        .iter()
        .map(|(c, n)| (c.to_string(), *n))
        .collect()
}

async fn file_store(dir: &Path, cache: &Path) -> Datamon {
    Datamon::open(
        &format!("file://{}", dir.display()),
        OpenOptions {
            author: Some("tester".into()),
            cache_dir: Some(cache.to_owned()),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

#[test]
fn vary_groups_exactly_the_runs_that_differ_in_one_component() {
    rt().block_on(async {
        let mut p = Pipeline::new(open("memory://compare-vary").await).await;
        let g = grid(&mut p).await;
        let dm = &p.dm;

        // --vary lr: the runs of each raw version, identical but for lr.
        let v = dm.vary_runs(&step("train"), "lr").await.unwrap();
        assert_eq!(names(&v), ["param:lr"]);
        assert!(!v.upstream);
        assert_eq!(v.runs, 8);
        assert_eq!(
            groups(&v),
            (0..2)
                .map(|ver| (0..3)
                    .map(|i| (LRS[i].to_owned(), g.train[ver][i]))
                    .collect::<Vec<_>>())
                .collect::<Vec<_>>()
        );
        // The groups share everything else, and say so.
        let fixed: Vec<String> = v.groups[0]
            .fixed
            .iter()
            .map(|f| format!("{}={}", f.component, f.value.clone().unwrap_or_default()))
            .collect();
        assert_eq!(fixed.len(), 3, "{fixed:?}");
        assert!(fixed.contains(&"code=git c1".to_owned()), "{fixed:?}");
        assert!(fixed.contains(&"param:epochs=3".to_owned()), "{fixed:?}");
        // The two odd runs are left out: one would join if epochs could differ too, the other
        // if the code could.
        assert_eq!(v.left_out.runs, 2);
        assert_eq!(
            left_by(&v),
            [("code".to_owned(), 1), ("param:epochs".to_owned(), 1)]
        );
        assert_eq!(v.left_out.other, 0);

        // --vary raw: two steps up, through the prepare runs; one group per lr.
        let v = dm.vary_runs(&step("train"), "raw").await.unwrap();
        assert_eq!(names(&v), ["prepared/input:raw"]);
        assert!(v.upstream);
        let raw = |i: usize| g.raw[i].to_string();
        assert_eq!(
            groups(&v),
            (0..3)
                .map(|i| {
                    let mut pair = vec![(raw(0), g.train[0][i]), (raw(1), g.train[1][i])];
                    pair.sort();
                    pair
                })
                .collect::<Vec<_>>()
        );
        assert_eq!(v.left_out.runs, 2);
        assert_eq!(left_by(&v), [("code".to_owned(), 1)]);
        assert_eq!(v.left_out.other, 1, "lr 0.4 with epochs 5 has no partner");

        // The same from the evaluate step: three steps of lineage.
        let v = dm.vary_runs(&step("evaluate"), "raw").await.unwrap();
        assert_eq!(names(&v), ["model:model.txt/prepared/input:raw"]);
        assert_eq!(v.groups.len(), 3);
        for (i, grp) in v.groups.iter().enumerate() {
            let mut ids: Vec<RunId> = grp.runs.iter().map(|r| r.run.id).collect();
            ids.sort();
            let mut want = vec![g.evaluate[0][i], g.evaluate[1][i]];
            want.sort();
            assert_eq!(ids, want);
            // The metric of every value, v2 scoring 0.05 more.
            let acc: Vec<f64> = grp
                .runs
                .iter()
                .map(|r| r.run.metrics["acc"].as_f64().unwrap())
                .collect();
            assert_eq!(acc.len(), 2);
        }
        // A parameter of an upstream step, by name.
        let v = dm.vary_runs(&step("evaluate"), "lr").await.unwrap();
        assert_eq!(names(&v), ["model:model.txt/param:lr"]);
        assert_eq!(v.groups.len(), 2);
        assert!(v.groups.iter().all(|g| g.runs.len() == 3));
        // A full name works too.
        let v = dm
            .vary_runs(&step("evaluate"), "model:model.txt/prepared/input:raw")
            .await
            .unwrap();
        assert_eq!(v.groups.len(), 3);

        // --vary code: the one pair that differs only in code.
        let v = dm.vary_runs(&step("train"), "code").await.unwrap();
        assert_eq!(
            groups(&v),
            [vec![
                ("git c1".to_owned(), g.train[1][0]),
                ("git c2".to_owned(), g.odd_code)
            ]]
        );
        // A direct input is preferred to one upstream.
        let v = dm.vary_runs(&step("train"), "prepared").await.unwrap();
        assert_eq!(names(&v), ["input:prepared"]);
        assert_eq!(v.groups.len(), 3);

        // Filters and sorting inside the groups.
        let q = CompareQuery {
            filters: vec!["epochs=3".parse().unwrap(), "code=c1".parse().unwrap()],
            sort: Some("-loss".parse::<RunSort>().unwrap()),
            ..step("train")
        };
        let v = dm.vary_runs(&q, "lr").await.unwrap();
        assert_eq!(v.runs, 6);
        assert_eq!(v.left_out.runs, 0);
        let lrs: Vec<&str> = v.groups[0]
            .runs
            .iter()
            .map(|r| r.run.params["lr"].as_str())
            .collect();
        assert_eq!(lrs, ["0.1", "0.2", "0.3"], "largest loss first");

        // Bad names and empty results.
        let e = dm.vary_runs(&step("train"), "momentum").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        let msg = e.to_string();
        assert!(msg.contains("\"momentum\""), "{msg}");
        assert!(msg.contains("param:lr"), "{msg}");
        assert!(msg.contains("prepared/input:raw"), "{msg}");
        let e = dm.vary_runs(&step("train"), "input:").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        let e = dm
            .vary_runs(&CompareQuery::default(), "lr")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("step"), "{e}");
        let v = dm.vary_runs(&step("trian"), "lr").await.unwrap();
        assert_eq!(v.runs, 0);
        assert!(v.groups.is_empty());
        assert_eq!(v.steps, ["evaluate", "prepare", "train"]);
        // One value only: no group, every run left out.
        let q = CompareQuery {
            filters: vec!["lr=0.2".parse().unwrap()],
            ..step("train")
        };
        let v = dm.vary_runs(&q, "lr").await.unwrap();
        assert!(v.groups.is_empty());
        assert_eq!(v.left_out.runs, 2);
        assert_eq!(v.left_out.other, 2);
        assert_ne!(g.odd_epochs, g.odd_code);
    });
}

#[test]
fn the_run_table_filters_sorts_and_labels() {
    rt().block_on(async {
        let mut p = Pipeline::new(open("memory://compare-table").await).await;
        let g = grid(&mut p).await;
        let dm = &p.dm;
        dm.set_label(&repo("raw"), &"latest".parse().unwrap(), &g.raw[1], None)
            .await
            .unwrap();

        let all = dm.compare_runs(&CompareQuery::default()).await.unwrap();
        assert_eq!(all.rows.len(), 2 + 8 + 8);
        assert_eq!(all.steps, ["evaluate", "prepare", "train"]);
        assert!(all
            .rows
            .windows(2)
            .all(|w| w[0].run.started_at <= w[1].run.started_at));

        let t = dm.compare_runs(&step("prepare")).await.unwrap();
        assert_eq!(
            t.rows.iter().map(|r| r.run.id).collect::<Vec<_>>(),
            g.prepare
        );
        assert_eq!(t.inputs, ["raw"]);
        assert_eq!(t.outputs, ["prepared"]);
        assert_eq!(t.params, ["scale"]);
        assert!(t.rows[0].inputs[0].labels.is_empty());
        assert_eq!(
            t.rows[1].inputs[0].labels,
            ["latest".parse::<LabelName>().unwrap()]
        );

        let e = dm.compare_runs(&step("evaluate")).await.unwrap();
        assert_eq!(e.inputs, ["model:model.txt"]);
        assert_eq!(e.metrics, ["acc"]);

        // Sorted by a metric, largest first; by a parameter.
        let q = CompareQuery {
            sort: Some("acc:desc".parse().unwrap()),
            ..step("evaluate")
        };
        let accs: Vec<f64> = dm
            .compare_runs(&q)
            .await
            .unwrap()
            .rows
            .iter()
            .map(|r| r.run.metrics["acc"].as_f64().unwrap())
            .collect();
        let mut sorted = accs.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        assert_eq!(accs, sorted);
        let q = CompareQuery {
            sort: Some("lr".parse().unwrap()),
            ..step("train")
        };
        let lrs: Vec<String> = dm
            .compare_runs(&q)
            .await
            .unwrap()
            .rows
            .iter()
            .map(|r| r.run.params["lr"].clone())
            .collect();
        assert_eq!(lrs.first().map(String::as_str), Some("0.1"));
        assert_eq!(lrs.last().map(String::as_str), Some("0.4"));
        let q = CompareQuery {
            sort: Some("nope".parse().unwrap()),
            ..step("train")
        };
        let err = dm.compare_runs(&q).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.to_string().contains("loss"), "{err}");

        // Filters: parameters, metrics (as numbers), code, inputs, time.
        let count = |filters: &[&str]| {
            let q = CompareQuery {
                filters: filters.iter().map(|f| f.parse().unwrap()).collect(),
                ..Default::default()
            };
            async move { dm.compare_runs(&q).await.unwrap().rows.len() }
        };
        assert_eq!(count(&["lr=0.1"]).await, 3);
        assert_eq!(count(&["param.lr=0.1", "code=c2"]).await, 1);
        assert_eq!(
            count(&["metric.acc=0.70"]).await,
            2,
            "v1 with lr 0.2, and lr 0.4"
        );
        assert_eq!(count(&["status=failed"]).await, 0);
        let prefix = &g.raw[0].to_string()[..20];
        assert_eq!(count(&[&format!("input.raw={prefix}")]).await, 1);
        assert!(matches!(
            "meta.x=1".parse::<RunFilter>().unwrap(),
            RunFilter::Meta { .. }
        ));
        let later = CompareQuery {
            since: Some(Utc::now() + Duration::days(1)),
            ..Default::default()
        };
        assert!(dm.compare_runs(&later).await.unwrap().rows.is_empty());
        let none = dm.compare_runs(&step("nope")).await.unwrap();
        assert!(none.rows.is_empty() && none.params.is_empty());
        assert_eq!(none.steps.len(), 3);
    });
}

#[test]
fn deep_diff_finds_the_one_upstream_change() {
    rt().block_on(async {
        let mut p = Pipeline::new(open("memory://compare-deep").await).await;
        let g = grid(&mut p).await;
        let dm = &p.dm;

        // Same lr, other raw version: evaluate <- train <- prepare <- raw.
        let d = dm
            .diff_runs_deep(&g.evaluate[0][1], &g.evaluate[1][1], DeepOptions::default())
            .await
            .unwrap();
        assert_eq!(d.steps.len(), 3);
        let walked: Vec<(&str, usize, Vec<String>)> = d
            .steps
            .iter()
            .map(|s| (s.diff.a.step.as_str(), s.depth, s.via.clone()))
            .collect();
        assert_eq!(
            walked,
            [
                ("evaluate", 0, vec![]),
                ("train", 1, vec!["model:model.txt".to_owned()]),
                (
                    "prepare",
                    2,
                    vec!["model:model.txt".to_owned(), "prepared".to_owned()]
                ),
            ]
        );
        assert_eq!(
            d.steps[0].inputs[0].origin,
            InputOrigin::Followed { step: 1 }
        );
        assert_eq!(d.steps[1].inputs[0].origin, InputOrigin::Followed { step: 2 });
        assert_eq!(
            d.steps[2].inputs[0].origin,
            InputOrigin::NoProducer { a: None, b: None }
        );
        // Every step's file-level changes.
        assert_eq!(d.steps[0].diff.inputs[0].changes.len(), 1);
        assert_eq!(d.steps[2].diff.inputs[0].changes[0].to_string(), "M data.csv");
        let only = d.only().expect("exactly one cause");
        assert_eq!(only.step, 2);
        assert_eq!(only.step_name, "prepare");
        assert_eq!(
            only.kind,
            CauseKind::Component {
                component: Component {
                    via: vec!["model:model.txt".into(), "prepared".into()],
                    kind: ComponentKind::Input {
                        slot: "raw".into(),
                        repo: repo("raw")
                    }
                }
            }
        );
        assert_eq!(only.a, Some(g.raw[0].to_string()));
        assert_eq!(only.b, Some(g.raw[1].to_string()));
        assert_eq!(only.changes.len(), 1);
        assert!(!only.unexplained);
        assert!(d.differs());

        // The top step is what `diff_runs` says.
        let plain = dm
            .diff_runs(&g.evaluate[0][1], &g.evaluate[1][1])
            .await
            .unwrap();
        assert_eq!(d.steps[0].diff, plain);

        // Other raw and other lr: two causes, at two steps.
        let d = dm
            .diff_runs_deep(&g.evaluate[0][0], &g.evaluate[1][2], DeepOptions::default())
            .await
            .unwrap();
        assert!(d.only().is_none());
        let causes: Vec<(String, String)> = d
            .causes
            .iter()
            .map(|c| match &c.kind {
                CauseKind::Component { component } => (c.step_name.clone(), component.to_string()),
                _ => (c.step_name.clone(), "step".into()),
            })
            .collect();
        assert_eq!(
            causes,
            [
                (
                    "train".to_owned(),
                    "model:model.txt/param:lr".to_owned()
                ),
                (
                    "prepare".to_owned(),
                    "model:model.txt/prepared/input:raw".to_owned()
                ),
            ]
        );

        // Same raw, other lr: the walk stops at train, whose input is the same bundle.
        let d = dm
            .diff_runs_deep(&g.train[0][0], &g.train[0][1], DeepOptions::default())
            .await
            .unwrap();
        assert_eq!(d.steps.len(), 1);
        assert_eq!(d.steps[0].inputs[0].origin, InputOrigin::SameBundle);
        let only = d.only().unwrap();
        assert_eq!(only.a.as_deref(), Some("0.1"));
        assert_eq!(only.b.as_deref(), Some("0.2"));

        // A depth limit ends the walk; the input there is the cause.
        let d = dm
            .diff_runs_deep(
                &g.evaluate[0][1],
                &g.evaluate[1][1],
                DeepOptions { depth: Some(1) },
            )
            .await
            .unwrap();
        assert_eq!(d.steps.len(), 2);
        assert_eq!(d.steps[1].inputs[0].origin, InputOrigin::DepthLimit);
        let only = d.only().unwrap();
        assert!(matches!(&only.kind, CauseKind::Component { component } if component.to_string() == "model:model.txt/input:prepared"));

        // A run with itself: nothing differs.
        let d = dm
            .diff_runs_deep(&g.train[0][0], &g.train[0][0], DeepOptions::default())
            .await
            .unwrap();
        assert!(d.causes.is_empty() && !d.differs());
        // Runs of different steps.
        let d = dm
            .diff_runs_deep(&g.train[0][0], &g.prepare[0], DeepOptions::default())
            .await
            .unwrap();
        assert!(matches!(d.causes[0].kind, CauseKind::Step));
        // A run that does not exist.
        let e = dm
            .diff_runs_deep(&g.train[0][0], &RunId::generate(), DeepOptions::default())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
    });
}

#[test]
fn deep_diff_names_a_step_that_is_not_reproducible() {
    rt().block_on(async {
        let mut p = Pipeline::new(open("memory://compare-rerun").await).await;
        let text = "a,1\n";
        let raw = p.bundle("raw", &[("data.csv", text.to_owned())]).await;
        let (_, first) = p.prepare(raw, text, false).await;
        let (_, again) = p.prepare(raw, text, true).await;
        let (t1, _) = p.train("c1", first, "0.1", "3").await;
        let (t2, _) = p.train("c1", again, "0.1", "3").await;
        let d = p
            .dm
            .diff_runs_deep(&t1, &t2, DeepOptions::default())
            .await
            .unwrap();
        assert_eq!(d.steps.len(), 2);
        assert!(d.steps[1].diff.params.iter().all(|v| !v.changed()));
        let only = d.only().expect("the prepared input alone");
        assert!(only.unexplained, "{only:?}");
        assert_eq!(only.step, 0);
        assert!(
            matches!(&only.kind, CauseKind::Component { component } if component.to_string() == "input:prepared")
        );
    });
}

#[test]
fn a_warm_catalog_sees_runs_another_machine_added() {
    rt().block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("store");
        let here = file_store(&store, &tmp.path().join("cache-here")).await;
        let mut p = Pipeline::new(here.clone()).await;
        let text = "a,1\n";
        let raw = p.bundle("raw", &[("data.csv", text.to_owned())]).await;
        let (_, prepared) = p.prepare(raw, text, false).await;
        p.train("c1", prepared, "0.1", "3").await;
        let v = here.vary_runs(&step("train"), "lr").await.unwrap();
        assert!(v.groups.is_empty() && v.runs == 1);

        // Another machine (its own cache) adds a run with another lr.
        let there = file_store(&store, &tmp.path().join("cache-there")).await;
        let mut q = Pipeline {
            dm: there,
            dirs: tempfile::tempdir().unwrap(),
            n: 100,
            clock: Utc::now(),
        };
        let (t2, _) = q.train("c1", prepared, "0.2", "3").await;
        let v = here.vary_runs(&step("train"), "lr").await.unwrap();
        assert_eq!(v.runs, 2);
        assert_eq!(v.groups.len(), 1);
        assert_eq!(v.groups[0].runs[1].run.id, t2);
        assert_eq!(
            here.compare_runs(&step("train")).await.unwrap().rows.len(),
            2
        );

        // A damaged cache (a line cut short, a torn last line) only costs a read from the store.
        let file = tmp
            .path()
            .join("cache-here/catalog")
            .join(&here.store().config().id)
            .join("runs.ndjson");
        let text = std::fs::read_to_string(&file).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        assert_eq!(lines.len(), 3, "{text}");
        let half = lines[0].len() / 2;
        lines[0].truncate(half);
        std::fs::write(&file, format!("{}\n{{\"torn", lines.join("\n"))).unwrap();
        let v = here.vary_runs(&step("train"), "lr").await.unwrap();
        assert_eq!(v.runs, 2);
        assert_eq!(v.groups.len(), 1);
        let d = here
            .diff_runs_deep(&v.groups[0].runs[0].run.id, &t2, DeepOptions::default())
            .await
            .unwrap();
        assert_eq!(d.only().unwrap().a.as_deref(), Some("0.1"));
    });
}

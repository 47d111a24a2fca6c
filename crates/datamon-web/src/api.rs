//! The JSON API of repos, bundles, labels, branches, runs and lineage (see `docs/web-api.md`).
//! Handlers parse, call the library and shape the answer; files and diffs are in `files.rs`.

use std::collections::BTreeMap;

use axum::extract::{Path, RawQuery, State};
use axum::Json;
use datamon::{
    Bundle, BundleId, BundlePageQuery, LabelName, LineageDirection, LineageOptions, RepoName, Run,
    RunId, RunQuery,
};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::params::{repo_name, Params};
use crate::{unsend, State as AppState};

/// How many repos are summarized at once.
const REPO_CONCURRENCY: usize = 8;

/// A repo with its bundle count and latest bundle.
#[derive(Debug, Serialize)]
pub(crate) struct RepoView {
    name: RepoName,
    description: String,
    created_at: chrono::DateTime<chrono::Utc>,
    created_by: String,
    bundles: usize,
    latest: Option<LatestView>,
}

#[derive(Debug, Serialize)]
struct LatestView {
    id: BundleId,
    created_at: chrono::DateTime<chrono::Utc>,
    message: String,
    files: u64,
    bytes: u64,
}

async fn summarize(state: &AppState, repo: datamon::Repo) -> ApiResult<RepoView> {
    let ids = state.dm.bundle_ids(&repo.name).await?;
    let latest = match ids.last() {
        Some(id) => {
            let b = state.dm.get_bundle(&repo.name, id).await?;
            Some(LatestView {
                id: b.id,
                created_at: b.created_at,
                message: b.message,
                files: b.stats.files,
                bytes: b.stats.bytes,
            })
        }
        None => None,
    };
    Ok(RepoView {
        name: repo.name,
        description: repo.description,
        created_at: repo.created_at,
        created_by: repo.created_by,
        bundles: ids.len(),
        latest,
    })
}

/// `GET /repos`
pub(crate) async fn repos(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let repos = state.dm.list_repos().await?;
    let views: Vec<RepoView> =
        futures::stream::iter(repos.into_iter().map(|r| summarize(&state, r)))
            .buffered(REPO_CONCURRENCY)
            .try_collect()
            .await?;
    Ok(Json(json!({ "repos": views })))
}

/// `GET /repos/{repo}`
pub(crate) async fn repo(
    State(state): State<AppState>,
    Path(repo): Path<String>,
) -> ApiResult<Json<Value>> {
    let name = repo_name(&repo)?;
    let r = state.dm.get_repo(&name).await?;
    let (view, branches, labels) = futures::try_join!(
        summarize(&state, r),
        async { Ok(state.dm.list_branches(&name).await?) },
        async { Ok::<_, ApiError>(state.dm.list_labels(&name).await?) },
    )?;
    let labels: Vec<Value> = labels
        .into_iter()
        .map(|(n, r)| json!({ "name": n, "bundle": r.bundle, "author": r.author, "time": r.time }))
        .collect();
    Ok(Json(
        json!({ "repo": view, "branches": branches, "labels": labels }),
    ))
}

/// Which labels and branch heads name each bundle of a repo.
async fn ref_names(
    state: &AppState,
    repo: &RepoName,
) -> ApiResult<(
    BTreeMap<BundleId, Vec<String>>,
    BTreeMap<BundleId, Vec<String>>,
)> {
    let (labels, branches) =
        futures::try_join!(state.dm.list_labels(repo), state.dm.list_branches(repo))?;
    let mut by_label: BTreeMap<BundleId, Vec<String>> = BTreeMap::new();
    for (name, rec) in labels {
        by_label
            .entry(rec.bundle)
            .or_default()
            .push(name.to_string());
    }
    let mut by_head: BTreeMap<BundleId, Vec<String>> = BTreeMap::new();
    for b in branches {
        if let Some(h) = b.head {
            by_head.entry(h).or_default().push(b.name.to_string());
        }
    }
    Ok((by_label, by_head))
}

fn bundle_view(
    b: &Bundle,
    labels: &BTreeMap<BundleId, Vec<String>>,
    heads: &BTreeMap<BundleId, Vec<String>>,
) -> Value {
    json!({
        "id": b.id,
        "message": b.message,
        "author": b.author,
        "created_at": b.created_at,
        "branch": b.branch,
        "parents": b.parents,
        "stats": b.stats,
        "meta": b.meta,
        "labels": labels.get(&b.id).cloned().unwrap_or_default(),
        "heads": heads.get(&b.id).cloned().unwrap_or_default(),
    })
}

/// `GET /repos/{repo}/bundles?limit&before&since&until&meta=K=V`
pub(crate) async fn bundles(
    State(state): State<AppState>,
    Path(repo): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Value>> {
    let name = repo_name(&repo)?;
    let p = Params::parse(q.as_deref())?;
    let query = BundlePageQuery {
        before: p.parsed::<BundleId>("before")?,
        limit: p.limit(50)?,
        since: p.time("since")?,
        until: p.time("until")?,
        meta: p.meta()?,
    };
    let repo2 = name.clone();
    let page = unsend(&state.dm, move |dm| async move {
        dm.bundles_page(&repo2, &query).await
    });
    let (page, (labels, heads)) =
        futures::try_join!(async { Ok(page.await?) }, ref_names(&state, &name))?;
    let list: Vec<Value> = page
        .bundles
        .iter()
        .map(|b| bundle_view(b, &labels, &heads))
        .collect();
    Ok(Json(
        json!({ "total": page.total, "bundles": list, "next": page.next }),
    ))
}

/// Resolves `{id}` of a URL: a bundle id, or a selector (`label:NAME`, `branch:NAME`, a bare
/// label or branch name, `latest`).
pub(crate) async fn resolve(state: &AppState, repo: &RepoName, id: &str) -> ApiResult<BundleId> {
    Ok(state.dm.resolve_text(repo, Some(id)).await?)
}

/// `GET /repos/{repo}/bundles/{id}`
pub(crate) async fn bundle(
    State(state): State<AppState>,
    Path((repo, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let name = repo_name(&repo)?;
    let id = resolve(&state, &name, &id).await?;
    let b = state.dm.get_bundle(&name, &id).await?;
    let (labels, heads) = ref_names(&state, &name).await?;
    Ok(Json(json!({ "bundle": bundle_view(&b, &labels, &heads) })))
}

/// `GET /repos/{repo}/labels`
pub(crate) async fn labels(
    State(state): State<AppState>,
    Path(repo): Path<String>,
) -> ApiResult<Json<Value>> {
    let name = repo_name(&repo)?;
    let labels: Vec<Value> = state
        .dm
        .list_labels(&name)
        .await?
        .into_iter()
        .map(|(n, r)| json!({ "name": n, "bundle": r.bundle, "author": r.author, "time": r.time }))
        .collect();
    Ok(Json(json!({ "labels": labels })))
}

/// `GET /repos/{repo}/labels/{label}`: the history, newest first.
pub(crate) async fn label_history(
    State(state): State<AppState>,
    Path((repo, label)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let name = repo_name(&repo)?;
    let label: LabelName = label
        .parse()
        .map_err(|e: datamon::types::Error| ApiError::bad(e.to_string()))?;
    let mut history = state.dm.label_history(&name, &label).await?;
    history.reverse();
    Ok(Json(json!({ "label": label, "history": history })))
}

/// `GET /repos/{repo}/branches`
pub(crate) async fn branches(
    State(state): State<AppState>,
    Path(repo): Path<String>,
) -> ApiResult<Json<Value>> {
    let name = repo_name(&repo)?;
    Ok(Json(
        json!({ "branches": state.dm.list_branches(&name).await? }),
    ))
}

/// `GET /runs?step&since&until&meta=K=V&offset&limit`: newest first.
pub(crate) async fn runs(
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Value>> {
    let p = Params::parse(q.as_deref())?;
    let until = p.time("until")?;
    let query = RunQuery {
        step: p.get("step").map(str::to_owned),
        since: p.time("since")?,
        meta: p.meta()?,
    };
    let mut runs: Vec<Run> = unsend(
        &state.dm,
        move |dm| async move { dm.list_runs(&query).await },
    )
    .await?;
    if let Some(u) = until {
        runs.retain(|r| r.started_at <= u);
    }
    let total = runs.len();
    let (offset, limit) = (p.offset()?, p.limit(50)?);
    let page: Vec<Run> = runs.into_iter().rev().skip(offset).take(limit).collect();
    let next = (offset + page.len() < total).then_some(offset + page.len());
    Ok(Json(
        json!({ "total": total, "runs": page, "next_offset": next }),
    ))
}

fn run_id(s: &str) -> ApiResult<RunId> {
    s.parse()
        .map_err(|e| ApiError::bad(format!("invalid run id {s:?}: {e}")))
}

/// `GET /runs/{id}`
pub(crate) async fn run(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let run = state.dm.get_run(&run_id(&id)?).await?;
    Ok(Json(json!({ "run": run })))
}

/// `GET /runs/{a}/diff/{b}`
pub(crate) async fn run_diff(
    State(state): State<AppState>,
    Path((a, b)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let d = state.dm.diff_runs(&run_id(&a)?, &run_id(&b)?).await?;
    let causes = d.causes_changed();
    Ok(Json(json!({ "diff": d, "causes_changed": causes })))
}

fn lineage_options(p: &Params) -> ApiResult<LineageOptions> {
    let direction = match p.get("direction").unwrap_or("both") {
        "both" => LineageDirection::Both,
        "upstream" => LineageDirection::Upstream,
        "downstream" => LineageDirection::Downstream,
        d => {
            return Err(ApiError::bad(format!(
                "invalid direction {d:?}: expected both, upstream or downstream"
            )))
        }
    };
    Ok(LineageOptions {
        direction,
        depth: p.parsed::<usize>("depth")?,
    })
}

/// `GET /repos/{repo}/bundles/{id}/lineage?direction&depth`
pub(crate) async fn bundle_lineage(
    State(state): State<AppState>,
    Path((repo, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Value>> {
    let p = Params::parse(q.as_deref())?;
    let name = repo_name(&repo)?;
    let id = resolve(&state, &name, &id).await?;
    let opts = lineage_options(&p)?;
    let l = unsend(&state.dm, move |dm| async move {
        dm.lineage(&name, &id, opts).await
    })
    .await?;
    Ok(Json(json!({ "lineage": l })))
}

/// `GET /runs/{id}/lineage?direction&depth`: the lineage around a run, drawn from its first
/// output (or, for a run without outputs, its first input).
pub(crate) async fn run_lineage(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Value>> {
    let p = Params::parse(q.as_deref())?;
    let run = state.dm.get_run(&run_id(&id)?).await?;
    let anchor = run
        .outputs
        .first()
        .map(|o| (o.repo.clone(), o.bundle))
        .or_else(|| run.inputs.first().map(|i| (i.repo.clone(), i.bundle)));
    let Some((repo, bundle)) = anchor else {
        return Ok(Json(json!({ "lineage": {
            "repo": null, "bundle": null, "bundles": [], "runs": [run], "edges": [] } })));
    };
    let opts = lineage_options(&p)?;
    let l = unsend(&state.dm, move |dm| async move {
        dm.lineage(&repo, &bundle, opts).await
    })
    .await?;
    Ok(Json(json!({ "lineage": l })))
}

/// Any other `/api/v1/...` path.
pub(crate) async fn no_such_endpoint() -> ApiError {
    ApiError::not_found("no such API endpoint (see docs/web-api.md)")
}

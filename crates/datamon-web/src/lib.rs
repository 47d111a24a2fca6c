//! datamon-web: a read-only web UI over a datamon store, and the JSON API it uses.
//!
//! The UI is plain HTML, CSS and JavaScript embedded in the binary (`assets/`); every page has a
//! stable URL (`/repos/NAME/bundles/ID/files/PATH`, `/runs/ID`...) served by the same page, which
//! renders it from the JSON API under `/api/v1/` (documented in `docs/web-api.md`). This crate is
//! an adapter: every answer comes from a [`datamon::Datamon`] call; file bytes are read through
//! the library's read-only [`datamon::vfs::Vfs`], so every chunk served is verified.
//!
//! Safety: only `GET` and `HEAD` are served; a listener on a non-loopback address needs a token
//! ([`WebOptions::token`]), checked on every request; on loopback the `Host` header must name
//! loopback (no DNS rebinding); names from the store are never interpreted (the UI builds its
//! DOM with `textContent`), paths with `.`/`..` components are refused, and every response
//! carries `X-Content-Type-Options: nosniff` and a strict `Content-Security-Policy`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let dm = datamon::Datamon::open("file:///tmp/store", datamon::OpenOptions::default()).await?;
//! let server = datamon_web::Server::bind(dm, datamon_web::WebOptions::default()).await?;
//! println!("serving on http://{}", server.local_addr());
//! server.serve(std::future::pending()).await?;
//! # Ok(()) }
//! ```

mod api;
mod assets;
mod error;
mod files;
mod guard;
mod params;
mod parquet;
mod textdiff;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::routing::get;
use axum::Router;
use datamon::vfs::{Vfs, VfsOptions};
use datamon::{BundleId, Datamon, RepoName};

pub use error::Error;

/// How many opened bundles (each with the store's index) the server keeps.
const OPEN_BUNDLES: usize = 4;

/// How the server listens.
#[derive(Debug, Clone)]
pub struct WebOptions {
    /// The address to listen on (default `127.0.0.1:8080`; port 0 picks a free port).
    pub listen: SocketAddr,
    /// The token every request must present (`Authorization: Bearer TOKEN`, the `datamon_token`
    /// cookie, or `?token=TOKEN` once, which sets the cookie). Required unless `listen` is a
    /// loopback address.
    pub token: Option<String>,
}

impl Default for WebOptions {
    fn default() -> Self {
        WebOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token: None,
        }
    }
}

/// What every handler shares.
#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) dm: Datamon,
    pub(crate) token: Option<String>,
    /// Whether the listener is on loopback (then `Host` must name loopback).
    pub(crate) loopback: bool,
    /// Recently opened bundles, most recent last.
    open: Mutex<Vec<((RepoName, BundleId), Vfs)>>,
}

pub(crate) type State = Arc<AppState>;

impl AppState {
    /// The read-only view of a bundle, opened once and kept among the last few used.
    pub(crate) async fn vfs(&self, repo: &RepoName, id: &BundleId) -> datamon::Result<Vfs> {
        let key = (repo.clone(), *id);
        {
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = open.iter().position(|(k, _)| *k == key) {
                let hit = open.remove(i);
                let vfs = hit.1.clone();
                open.push(hit);
                return Ok(vfs);
            }
        }
        let opts = VfsOptions {
            cache_dir: None,
            memory_cache: 16 << 20,
            ..VfsOptions::default()
        };
        let vfs = self
            .dm
            .vfs(repo, id, opts, tokio::runtime::Handle::current())
            .await?;
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if !open.iter().any(|(k, _)| *k == key) {
            if open.len() >= OPEN_BUNDLES {
                open.remove(0);
            }
            open.push((key, vfs.clone()));
        }
        Ok(vfs)
    }
}

/// Runs a library call on a blocking thread of the runtime. Some library futures (those that
/// stream over borrowed items: the catalog, lineage) cannot be proven `Send` by the compiler,
/// which axum's handlers must be; the call is made inside the closure, so only owned inputs
/// cross threads.
pub(crate) async fn unsend<T, F, Fut>(dm: &Datamon, f: F) -> datamon::Result<T>
where
    T: Send + 'static,
    F: FnOnce(Datamon) -> Fut + Send + 'static,
    Fut: Future<Output = datamon::Result<T>>,
{
    let dm = dm.clone();
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || handle.block_on(f(dm))).await?
}

/// The router: the JSON API, the embedded assets, and the UI page for every other `GET`.
///
/// # Errors
/// [`Error::TokenRequired`] when `opts.listen` is not loopback and there is no token.
pub fn router(dm: Datamon, opts: &WebOptions) -> Result<Router, Error> {
    let loopback = opts.listen.ip().is_loopback();
    if !loopback && opts.token.as_deref().is_none_or(str::is_empty) {
        return Err(Error::TokenRequired { addr: opts.listen });
    }
    let state: State = Arc::new(AppState {
        dm,
        token: opts.token.clone().filter(|t| !t.is_empty()),
        loopback,
        open: Mutex::new(Vec::new()),
    });
    let api = Router::new()
        .route("/repos", get(api::repos))
        .route("/repos/{repo}", get(api::repo))
        .route("/repos/{repo}/bundles", get(api::bundles))
        .route("/repos/{repo}/bundles/{id}", get(api::bundle))
        .route("/repos/{repo}/bundles/{id}/tree", get(files::tree))
        .route("/repos/{repo}/bundles/{id}/preview", get(files::preview))
        .route("/repos/{repo}/bundles/{id}/raw", get(files::raw))
        .route(
            "/repos/{repo}/bundles/{id}/lineage",
            get(api::bundle_lineage),
        )
        .route("/repos/{repo}/diff", get(files::diff))
        .route("/repos/{repo}/diff/text", get(files::text_diff))
        .route("/repos/{repo}/labels", get(api::labels))
        .route("/repos/{repo}/labels/{label}", get(api::label_history))
        .route("/repos/{repo}/branches", get(api::branches))
        .route("/runs", get(api::runs))
        .route("/runs/{id}", get(api::run))
        .route("/runs/{id}/lineage", get(api::run_lineage))
        .route("/runs/{a}/diff/{b}", get(api::run_diff))
        .fallback(api::no_such_endpoint);
    Ok(Router::new()
        .nest("/api/v1", api)
        .route("/assets/{name}", get(assets::serve))
        .fallback(assets::page)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::guard,
        ))
        .with_state(state))
}

/// A bound server, ready to serve.
#[derive(Debug)]
pub struct Server {
    listener: tokio::net::TcpListener,
    router: Router,
}

impl Server {
    /// Binds the listener (see [`WebOptions`]).
    ///
    /// # Errors
    /// [`Error::TokenRequired`]; [`Error::Bind`] when the address cannot be bound.
    pub async fn bind(dm: Datamon, opts: WebOptions) -> Result<Server, Error> {
        let router = router(dm, &opts)?;
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: opts.listen,
                source,
            })?;
        Ok(Server { listener, router })
    }

    /// The address actually bound (with the port chosen when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound TCP listener has an address")
    }

    /// Serves until `shutdown` completes, then lets requests in progress finish.
    ///
    /// # Errors
    /// [`Error::Serve`] when accepting connections fails.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(Error::Serve)
    }
}

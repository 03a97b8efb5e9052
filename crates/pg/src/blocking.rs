//! Work that blocks a thread, run on tokio's blocking pool so the async
//! threads keep driving connections meanwhile: PBKDF2 (planning checks every
//! stored SCRAM verifier; apply and rotate compute new ones), reading and
//! writing password files (with their fsyncs and the short retry sleep of a
//! racing writer), and the schema directory. Dump files use `tokio::fs`,
//! which does the same.

/// Runs `f` on the blocking pool and waits for it; a panic in `f` goes on
/// in the caller.
pub(crate) async fn run<T, F>(f: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => value,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("blocking work cancelled: the runtime is shutting down ({e})"),
    }
}

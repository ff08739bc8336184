//! What can go wrong in a reconcile, which of it retrying cannot fix, and the
//! short label each error is logged (and later counted) under.

/// A failed reconcile. Transient errors retry with backoff; those
/// [`Error::permanent`] names become condition Stalled instead.
#[derive(thiserror::Error, Debug)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Reading or writing an export artifact in the export directory.
    #[error("export artifact {path}: {source}")]
    ArtifactFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Listing, uploading or deleting an export artifact in the bucket.
    #[error("export bucket: {0}")]
    ArtifactBucket(#[from] object_store::Error),
    #[error("{0} has no name")]
    Unnamed(&'static str),
    /// A cache can no longer be filled: its watch stopped (at shutdown).
    #[error("the watch filling the cache of {0} stopped")]
    WatchStopped(String),
    /// Something tenure was about to change turned out not to be its own.
    #[error("refusing to touch what tenure does not own: {0}")]
    NotOwned(String),
    /// A RetentionHold the cache had not shown yet turned up in the live
    /// re-read right before a delete: nothing was deleted, decide again.
    #[error("RetentionHold {0} appeared right before a delete; nothing was deleted")]
    HoldAppeared(String),
    /// This process may no longer be the leader (its Lease was not renewed
    /// in time): what no API server precondition guards is left undone.
    #[error(
        "not sure to lead any more (the leader Lease was not renewed in time): {0} left undone"
    )]
    NotLeading(&'static str),
    /// A guarded write was refused: the object changed since the write's
    /// resourceVersion (another writer, such as a leader that took over).
    #[error("{0} changed since it was read; nothing was written")]
    Changed(String),
    /// The reconcile took longer than this and was given up.
    #[error("the reconcile took longer than {0:?} and was given up")]
    TimedOut(std::time::Duration),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error on the artifact file at `path`.
    pub fn file(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
        move |source| Error::ArtifactFile {
            path: path.display().to_string(),
            source,
        }
    }

    /// A short, stable name of the error's cause, for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(status)) if status.code == 409 => "Conflict",
            Error::Kube(kube::Error::Api(status)) if status.code == 404 => "NotFound",
            Error::Kube(kube::Error::Api(status)) if status.code == 403 => "Forbidden",
            Error::Kube(kube::Error::Api(status)) if status.code == 422 => "Invalid",
            Error::Kube(kube::Error::Api(_)) => "ApiError",
            Error::Kube(_) => "ApiUnreachable",
            Error::ArtifactFile { .. } => "ArtifactFile",
            Error::ArtifactBucket(_) => "ArtifactBucket",
            Error::Unnamed(_) => "Unnamed",
            Error::WatchStopped(_) => "WatchStopped",
            Error::NotOwned(_) => "NotOwned",
            Error::HoldAppeared(_) => "HoldAppeared",
            Error::NotLeading(_) => "NotLeading",
            Error::Changed(_) => "Conflict",
            Error::TimedOut(_) => "TimedOut",
        }
    }

    /// For an error that retrying will not fix (tenure is not allowed to do
    /// something, or the object is refused): the Stalled reason and message.
    pub fn permanent(&self) -> Option<(&'static str, String)> {
        match self {
            Error::Kube(kube::Error::Api(status)) if status.code == 403 => Some((
                "Forbidden",
                format!(
                    "tenure is not allowed to do what this needs ({}); grant it in tenure's ClusterRole (the chart's rbac values)",
                    status.message
                ),
            )),
            Error::Kube(kube::Error::Api(status)) if status.code == 422 => Some((
                "Invalid",
                format!("the API server refused a write: {}", status.message),
            )),
            Error::NotOwned(what) => Some((
                "NotOwned",
                format!("refusing to touch what tenure does not own: {what}"),
            )),
            _ => None,
        }
    }

    /// Whether the API server refused a write because the object changed
    /// since it was read.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(status)) if status.code == 409)
    }
}

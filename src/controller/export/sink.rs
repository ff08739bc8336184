//! Where export artifacts are kept: files under the export directory, or
//! objects in an S3-compatible bucket (the directory then stages the upload).
//! Every write, listing and delete of an artifact goes through here, and only
//! under the namespace's own folder or key prefix.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::TimeDelta;
use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};

use crate::controller::error::{Error, Result};
use crate::leadership::Fence;
use crate::lifecycle::export::{ArtifactLocation, ArtifactStore};

/// Where ZIPs go and how long they are kept.
#[derive(Clone, Debug)]
pub struct ExportSettings {
    /// Where ZIPs are written: the artifact itself, or the staging area of an
    /// upload.
    pub dir: PathBuf,
    pub keep_for: TimeDelta,
    /// Set: ZIPs are uploaded to this S3-compatible bucket.
    pub bucket: Option<Bucket>,
}

/// An S3-compatible bucket (and key prefix) for export artifacts.
#[derive(Clone, Debug)]
pub struct Bucket {
    pub name: String,
    pub prefix: String,
    pub store: Arc<AmazonS3>,
}

/// A ZIP made the artifact of its export.
pub struct Published {
    pub uri: String,
    /// The uploaded object, which goes again if its export cannot record it.
    pub uploaded: Option<ArtifactLocation>,
}

impl Bucket {
    /// From `s3://bucket/prefix`, with credentials, region and endpoint from the
    /// usual AWS_* environment variables (AWS_ENDPOINT for other S3 servers).
    pub fn from_url(url: &str) -> anyhow::Result<Self> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| {
            anyhow::anyhow!("--export-url must look like s3://bucket/prefix, not {url:?}")
        })?;
        let (name, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let store = AmazonS3Builder::from_env().with_bucket_name(name).build()?;
        Ok(Self {
            name: name.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            store: Arc::new(store),
        })
    }

    /// Where the artifacts of one namespace's exports go.
    fn namespace_prefix(&self, namespace: &str) -> String {
        format!("{}/{namespace}", self.prefix)
            .trim_start_matches('/')
            .to_string()
    }

    /// Uploads the file in parts, never all of it in memory; completed only
    /// while this process still leads (`fence`): a replica that lost the
    /// Lease does not replace the object the new leader uploaded.
    async fn upload(&self, file: &Path, key: &ObjectPath, fence: &Fence) -> Result<()> {
        let mut upload = WriteMultipart::new(self.store.put_multipart(key).await?);
        let mut reader = std::fs::File::open(file).map_err(Error::file(file))?;
        let mut chunk = vec![0u8; 8 << 20];
        loop {
            let read = reader.read(&mut chunk).map_err(Error::file(file))?;
            if read == 0 {
                break;
            }
            upload.wait_for_capacity(2).await?;
            upload.write(&chunk[..read]);
        }
        if !fence.holds() {
            upload.abort().await?;
            return Err(Error::NotLeading("completing the export's upload"));
        }
        upload.finish().await?;
        Ok(())
    }
}

impl ExportSettings {
    /// The folder that stages (or keeps) one namespace's ZIPs.
    pub fn folder(&self, namespace: &str) -> PathBuf {
        self.dir.join(namespace)
    }

    /// Makes the finished ZIP at `path` the artifact of export
    /// `namespace/name`: the file itself, or its upload to the bucket (while
    /// `fence` holds).
    pub async fn publish(
        &self,
        namespace: &str,
        name: &str,
        path: &Path,
        fence: &Fence,
    ) -> Result<Published> {
        match &self.bucket {
            Some(bucket) => {
                let key =
                    ObjectPath::from(format!("{}/{name}.zip", bucket.namespace_prefix(namespace)));
                bucket.upload(path, &key, fence).await?;
                Ok(Published {
                    uri: format!("s3://{}/{key}", bucket.name),
                    uploaded: Some(ArtifactLocation::Object {
                        key: key.to_string(),
                    }),
                })
            }
            None => Ok(Published {
                uri: format!(
                    "file://{}",
                    std::path::absolute(path)
                        .map_err(Error::file(path))?
                        .display()
                ),
                uploaded: None,
            }),
        }
    }

    /// Whether the ZIP file is the artifact itself (it is kept), rather than
    /// the staging copy of an upload.
    pub fn keeps_files(&self) -> bool {
        self.bucket.is_none()
    }

    /// Where `namespace`'s artifacts may be deleted: the export directory
    /// (absolute) and the bucket and prefix.
    pub fn store<'a>(&'a self, dir: &'a Path, namespace: &'a str) -> ArtifactStore<'a> {
        ArtifactStore {
            dir,
            bucket: self
                .bucket
                .as_ref()
                .map(|b| (b.name.as_str(), b.prefix.as_str())),
            namespace,
        }
    }

    /// The export directory, absolute: what [`Self::store`] compares with.
    pub fn absolute_dir(&self) -> Result<PathBuf> {
        std::path::absolute(&self.dir).map_err(Error::file(&self.dir))
    }

    /// Every artifact of `namespace`'s exports, finished or partial: what a
    /// purge of the organization removes.
    pub async fn artifacts_of(&self, namespace: &str) -> Result<Vec<ArtifactLocation>> {
        let mut artifacts = Vec::new();
        let dir = self.folder(namespace);
        match std::fs::read_dir(&dir) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry.map_err(Error::file(&dir))?;
                    if entry.file_type().is_ok_and(|t| t.is_file()) {
                        artifacts.push(ArtifactLocation::File(entry.path()));
                    }
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(Error::file(&dir)(error)),
        }
        if let Some(bucket) = &self.bucket {
            let prefix = ObjectPath::from(bucket.namespace_prefix(namespace));
            let listed: Vec<_> = bucket.store.list(Some(&prefix)).try_collect().await?;
            artifacts.extend(listed.into_iter().map(|object| ArtifactLocation::Object {
                key: object.location.to_string(),
            }));
        }
        artifacts.sort_by_key(|a| format!("{a:?}"));
        Ok(artifacts)
    }

    /// Deletes one artifact; one already gone is fine.
    pub async fn delete(&self, artifact: &ArtifactLocation) -> Result<()> {
        match artifact {
            ArtifactLocation::File(path) => match std::fs::remove_file(path) {
                Ok(()) => Ok(()),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(error) => Err(Error::file(path)(error)),
            },
            ArtifactLocation::Object { key } => {
                let Some(bucket) = &self.bucket else {
                    return Ok(());
                };
                match bucket.store.delete(&ObjectPath::from(key.as_str())).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(error) => Err(error.into()),
                }
            }
        }
    }
}

//! Where export artifacts are kept: files under the export directory, or
//! objects in an S3-compatible bucket (the directory then stages the upload).
//! Every write, listing and delete of an artifact goes through here, and only
//! under the namespace's own folder or key prefix.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::TimeDelta;
use futures::TryStreamExt;
use futures::stream::FuturesUnordered;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt};

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
    /// while this process still leads (`fence`), checked once every part is
    /// up: a replica that lost the Lease does not replace the object the new
    /// leader uploaded.
    async fn upload(&self, file: &Path, key: &ObjectPath, fence: &Fence) -> Result<()> {
        let mut upload = self.store.put_multipart(key).await?;
        let sent = match send_parts(upload.as_mut(), file, PART_BYTES).await {
            Ok(()) => fence.check("completing the export's upload"),
            failed => failed,
        };
        match sent {
            Ok(()) => upload.complete().await.map(|_| ()).map_err(Error::from),
            Err(error) => {
                // What went wrong is the first error; parts left by a failed
                // abort are the bucket's lifecycle rules' to remove.
                let _ = upload.abort().await;
                Err(error)
            }
        }
    }

    /// The object key of export `namespace/name`'s artifact.
    fn key(&self, namespace: &str, name: &str) -> ObjectPath {
        ObjectPath::from(format!("{}/{name}.zip", self.namespace_prefix(namespace)))
    }
}

/// The size of every uploaded part but the last (S3 wants at least 5 MiB).
const PART_BYTES: u64 = 8 << 20;

/// How many parts go up at once (each is held in memory until it is up).
const PARTS_IN_FLIGHT: usize = 2;

/// Sends `file` as parts of `part_bytes` (at least one part, so that an
/// empty file is an empty object), [`PARTS_IN_FLIGHT`] at a time; returns
/// once every part is up.
async fn send_parts(upload: &mut dyn MultipartUpload, file: &Path, part_bytes: u64) -> Result<()> {
    let mut reader = std::fs::File::open(file).map_err(Error::file(file))?;
    let mut in_flight = FuturesUnordered::new();
    let mut sent_any = false;
    loop {
        let mut part = Vec::new();
        (&mut reader)
            .take(part_bytes)
            .read_to_end(&mut part)
            .map_err(Error::file(file))?;
        if part.is_empty() && sent_any {
            break;
        }
        let last = (part.len() as u64) < part_bytes;
        in_flight.push(upload.put_part(part.into()));
        sent_any = true;
        if in_flight.len() >= PARTS_IN_FLIGHT {
            in_flight.try_next().await?;
        }
        if last {
            break;
        }
    }
    while in_flight.try_next().await?.is_some() {}
    Ok(())
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
                let key = bucket.key(namespace, name);
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

    /// Where export `namespace/name`'s finished ZIP is: its file, and its
    /// uploaded object when there is a bucket (one whose upload completed
    /// but whose status write failed is found here too).
    pub fn artifact_of(&self, namespace: &str, name: &str) -> Vec<ArtifactLocation> {
        let mut artifacts = vec![ArtifactLocation::File(
            self.folder(namespace).join(format!("{name}.zip")),
        )];
        if let Some(bucket) = &self.bucket {
            artifacts.push(ArtifactLocation::Object {
                key: bucket.key(namespace, name).to_string(),
            });
        }
        artifacts
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

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    /// What `send_parts` puts into a store, completed.
    async fn uploaded(content: &[u8], part_bytes: u64) -> Vec<u8> {
        let dir = std::env::temp_dir().join(format!("tenure-parts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("{}-{part_bytes}.zip", content.len()));
        std::fs::write(&file, content).unwrap();
        let store = InMemory::new();
        let key = ObjectPath::from("org-acme/export.zip");
        let mut upload = store.put_multipart(&key).await.unwrap();
        send_parts(upload.as_mut(), &file, part_bytes)
            .await
            .unwrap();
        upload.complete().await.unwrap();
        std::fs::remove_file(&file).unwrap();
        let got = store.get(&key).await.unwrap().bytes().await.unwrap();
        got.to_vec()
    }

    #[tokio::test]
    async fn a_file_goes_up_whole_in_parts_of_the_part_size_and_an_empty_one_too() {
        let content: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        for part_bytes in [7, 100, 250, 1000, 4096] {
            assert_eq!(
                uploaded(&content, part_bytes).await,
                content,
                "{part_bytes}"
            );
        }
        assert_eq!(uploaded(&[], 7).await, Vec::<u8>::new());
    }
}

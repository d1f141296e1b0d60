//! A reproducible OCI image writer: one layer from a list of files, the image config, the
//! manifest and the index — as an OCI layout directory and as one tarball that is an OCI archive
//! and a docker archive at once (what `docker save` writes since Docker 25), so `podman load`,
//! `docker load`, `skopeo copy oci-archive:`/`docker-archive:` and `kind load image-archive`
//! all read it.
//!
//! Reproducible by construction: entries sorted by path, one fixed mtime and owner, gzip without
//! a timestamp, JSON with sorted keys.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// One file or directory of the root filesystem.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    /// Path without a leading `/` (`etc/passwd`); directories end without `/`.
    pub path: String,
    /// Permission bits.
    pub mode: u32,
    /// `None` for a directory.
    pub data: Option<Vec<u8>>,
}

impl Entry {
    pub(crate) fn dir(path: &str) -> Self {
        Self {
            path: path.to_owned(),
            mode: 0o755,
            data: None,
        }
    }

    pub(crate) fn file(path: &str, mode: u32, data: Vec<u8>) -> Self {
        Self {
            path: path.to_owned(),
            mode,
            data: Some(data),
        }
    }
}

/// What the image says about itself.
#[derive(Clone, Debug)]
pub(crate) struct ImageSpec {
    /// `repository:tag` names it is loaded under (`RepoTags` and the ref annotations).
    pub reference: String,
    /// The tag alone (`org.opencontainers.image.ref.name`).
    pub tag: String,
    /// Seconds since the epoch: every mtime and the `created` time (the commit's time).
    pub epoch: i64,
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `User` (`uid:gid`).
    pub user: String,
    /// `Env`.
    pub env: Vec<String>,
    /// OCI labels, also written as manifest annotations.
    pub labels: BTreeMap<String, String>,
}

/// A content-addressed blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Blob {
    pub media_type: &'static str,
    pub bytes: Vec<u8>,
}

impl Blob {
    fn new(media_type: &'static str, bytes: Vec<u8>) -> Self {
        Self { media_type, bytes }
    }

    /// `sha256:<hex>`.
    pub(crate) fn digest(&self) -> String {
        sha256_digest(&self.bytes)
    }

    fn hex(&self) -> String {
        hex(&Sha256::digest(&self.bytes))
    }

    fn descriptor(&self) -> Value {
        json!({
            "mediaType": self.media_type,
            "digest": self.digest(),
            "size": self.bytes.len(),
        })
    }
}

/// The built image: its blobs and the JSON files that point at them.
#[derive(Debug)]
pub(crate) struct Image {
    pub layer: Blob,
    pub config: Blob,
    pub manifest: Blob,
    pub index: Vec<u8>,
    /// docker's `manifest.json`.
    pub docker_manifest: Vec<u8>,
}

const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// `sha256:<hex>` of `bytes`.
pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Builds the image from `entries` (any order; parents must be listed).
pub(crate) fn build(spec: &ImageSpec, entries: &[Entry]) -> anyhow::Result<Image> {
    let tar = tar_of(entries, spec.epoch)?;
    let diff_id = sha256_digest(&tar);
    let layer = Blob::new(LAYER_MEDIA_TYPE, gzip(&tar)?);
    let created = rfc3339(spec.epoch);
    let config = json!({
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": spec.user,
            "Entrypoint": spec.entrypoint,
            "Env": spec.env,
            "WorkingDir": "/",
            "Labels": spec.labels,
        },
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        "history": [{ "created": created, "created_by": "cargo xtask image" }],
    });
    let config = Blob::new(CONFIG_MEDIA_TYPE, serde_json::to_vec(&config)?);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": config.descriptor(),
        "layers": [layer.descriptor()],
        "annotations": spec.labels,
    });
    let manifest = Blob::new(MANIFEST_MEDIA_TYPE, serde_json::to_vec(&manifest)?);
    let mut descriptor = manifest.descriptor();
    descriptor["annotations"] = json!({
        "io.containerd.image.name": spec.reference,
        "org.opencontainers.image.ref.name": spec.tag,
    });
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [descriptor],
    }))?;
    let docker_manifest = serde_json::to_vec(&json!([{
        "Config": format!("blobs/sha256/{}", config.hex()),
        "RepoTags": [spec.reference],
        "Layers": [format!("blobs/sha256/{}", layer.hex())],
    }]))?;
    Ok(Image {
        layer,
        config,
        manifest,
        index,
        docker_manifest,
    })
}

impl Image {
    /// The files of the OCI layout (and docker's `manifest.json`), sorted by path.
    fn layout_files(&self) -> Vec<(String, &[u8])> {
        let mut files: Vec<(String, &[u8])> = vec![
            ("oci-layout".to_owned(), OCI_LAYOUT),
            ("index.json".to_owned(), &self.index),
            ("manifest.json".to_owned(), &self.docker_manifest),
        ];
        for blob in [&self.layer, &self.config, &self.manifest] {
            files.push((format!("blobs/sha256/{}", blob.hex()), &blob.bytes));
        }
        files.sort_by(|a, b| a.0.cmp(&b.0));
        files
    }

    /// Writes the OCI layout into `dir` (created; emptied first).
    pub(crate) fn write_layout(&self, dir: &Path) -> anyhow::Result<()> {
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("emptying {}", dir.display()))?;
        }
        for (path, bytes) in self.layout_files() {
            let path = dir.join(path);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }

    /// The layout as one tarball (OCI archive and docker archive).
    pub(crate) fn archive(&self, epoch: i64) -> anyhow::Result<Vec<u8>> {
        let mut entries = vec![Entry::dir("blobs"), Entry::dir("blobs/sha256")];
        for (path, bytes) in self.layout_files() {
            entries.push(Entry::file(&path, 0o644, bytes.to_vec()));
        }
        tar_of(&entries, epoch)
    }
}

/// A tar of `entries` (parents listed), sorted by path, owned by root, every mtime `epoch`.
pub(crate) fn tar_of(entries: &[Entry], epoch: i64) -> anyhow::Result<Vec<u8>> {
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let mtime = u64::try_from(epoch).context("a commit time before 1970")?;
    let mut builder = tar::Builder::new(Vec::new());
    for entry in sorted {
        let mut header = tar::Header::new_ustar();
        header.set_mode(entry.mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(mtime);
        header.set_username("root")?;
        header.set_groupname("root")?;
        match &entry.data {
            Some(data) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(u64::try_from(data.len())?);
                builder.append_data(&mut header, &entry.path, data.as_slice())?;
            }
            None => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                builder.append_data(&mut header, format!("{}/", entry.path), std::io::empty())?;
            }
        }
    }
    Ok(builder.into_inner()?)
}

/// gzip with no file name and mtime 0 (the default header), so equal input gives equal bytes.
pub(crate) fn gzip(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut encoder = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes)?;
    Ok(encoder.finish()?)
}

/// `YYYY-MM-DDTHH:MM:SSZ` of seconds since the epoch (UTC).
pub(crate) fn rfc3339(epoch: i64) -> String {
    let days = epoch.div_euclid(86_400);
    let secs = epoch.rem_euclid(86_400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ImageSpec {
        ImageSpec {
            reference: "example.test/everynode:0.1.0".into(),
            tag: "0.1.0".into(),
            epoch: 1_764_806_400,
            entrypoint: vec!["/everynode".into()],
            user: "65532:65532".into(),
            env: vec!["PATH=/".into()],
            labels: BTreeMap::from([("org.opencontainers.image.version".into(), "0.1.0".into())]),
        }
    }

    fn entries() -> Vec<Entry> {
        vec![
            Entry::file(
                "etc/passwd",
                0o644,
                b"root:x:0:0::/:/sbin/nologin\n".to_vec(),
            ),
            Entry::dir("etc"),
            Entry::file("everynode", 0o755, vec![0x7f, b'E', b'L', b'F']),
        ]
    }

    #[test]
    fn equal_input_gives_an_equal_digest_whatever_the_entry_order() -> anyhow::Result<()> {
        let a = build(&spec(), &entries())?;
        let mut reversed = entries();
        reversed.reverse();
        let b = build(&spec(), &reversed)?;
        assert_eq!(a.manifest.digest(), b.manifest.digest());
        assert_eq!(a.archive(0)?, b.archive(0)?);
        let mut later = spec();
        later.epoch += 1;
        assert_ne!(
            build(&later, &entries())?.manifest.digest(),
            a.manifest.digest()
        );
        Ok(())
    }

    #[test]
    fn the_archive_is_an_oci_layout_and_a_docker_archive() -> anyhow::Result<()> {
        let image = build(&spec(), &entries())?;
        let archive = image.archive(spec().epoch)?;
        let mut names = Vec::new();
        for entry in tar::Archive::new(archive.as_slice()).entries()? {
            names.push(entry?.path()?.display().to_string());
        }
        for wanted in ["oci-layout", "index.json", "manifest.json", "blobs/sha256/"] {
            assert!(names.iter().any(|n| n == wanted), "{wanted} in {names:?}");
        }
        let docker: Value = serde_json::from_slice(&image.docker_manifest)?;
        let layer = docker[0]["Layers"][0].as_str().unwrap_or_default();
        assert!(names.iter().any(|n| n == layer), "{layer} in {names:?}");
        let index: Value = serde_json::from_slice(&image.index)?;
        assert_eq!(index["manifests"][0]["digest"], image.manifest.digest());
        Ok(())
    }

    #[test]
    fn the_config_names_the_uncompressed_layer() -> anyhow::Result<()> {
        let image = build(&spec(), &entries())?;
        let mut tar = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(image.layer.bytes.as_slice()),
            &mut tar,
        )?;
        let config: Value = serde_json::from_slice(&image.config.bytes)?;
        assert_eq!(config["rootfs"]["diff_ids"][0], sha256_digest(&tar));
        assert_eq!(config["config"]["User"], "65532:65532");
        Ok(())
    }

    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_764_806_400 + 3_723), "2025-12-04T01:02:03Z");
    }
}

//! A throw-away PKI for one cluster, generated in-process with `rcgen` (ECDSA P-256): no
//! `openssl` binary needed, and generation takes milliseconds.
//!
//! Files (all PEM, keys PKCS#8):
//! - `ca.crt` / `ca.key`: the cluster CA (client CA of the API server, CA of the kubeconfig);
//! - `apiserver.crt` / `apiserver.key`: serving certificate for `127.0.0.1`, `localhost` and the
//!   in-cluster `kubernetes.default...` names;
//! - `admin.crt` / `admin.key`: client certificate `CN=everynode-admin, O=system:masters`, used by
//!   the kubeconfig shared by every component and by the tests;
//! - `sa.key` / `sa.pub`: service-account token signing key (ES256) and its public key.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, date_time_ymd,
};

use crate::error::{Error, Result};

/// Paths of the generated PKI files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// PKI rooted at `dir`.
    #[must_use]
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// CA certificate.
    #[must_use]
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    /// CA key.
    #[must_use]
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    /// API server serving certificate.
    #[must_use]
    pub fn apiserver_cert(&self) -> PathBuf {
        self.dir.join("apiserver.crt")
    }
    /// API server serving key.
    #[must_use]
    pub fn apiserver_key(&self) -> PathBuf {
        self.dir.join("apiserver.key")
    }
    /// Admin client certificate.
    #[must_use]
    pub fn admin_cert(&self) -> PathBuf {
        self.dir.join("admin.crt")
    }
    /// Admin client key.
    #[must_use]
    pub fn admin_key(&self) -> PathBuf {
        self.dir.join("admin.key")
    }
    /// Service-account signing key (private; the API server derives the public key from it).
    #[must_use]
    pub fn sa_key(&self) -> PathBuf {
        self.dir.join("sa.key")
    }

    /// Service-account verification key (public half of [`Pki::sa_key`]).
    #[must_use]
    pub fn sa_pub(&self) -> PathBuf {
        self.dir.join("sa.pub")
    }

    /// Generates every file, overwriting existing ones.
    pub fn generate(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| Error::io("create directory", &self.dir, e))?;

        let ca_key = KeyPair::generate()?;
        let mut ca = base_params("everynode-ca", None)?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key)?;
        write(&self.ca_cert(), &ca_cert.pem())?;
        write(&self.ca_key(), &ca_key.serialize_pem())?;
        let issuer = Issuer::new(ca, ca_key);

        let server_key = KeyPair::generate()?;
        let mut server = base_params("kube-apiserver", None)?;
        server.subject_alt_names = vec![
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::new(10, 96, 0, 1))),
            dns("localhost")?,
            dns("kubernetes")?,
            dns("kubernetes.default")?,
            dns("kubernetes.default.svc")?,
            dns("kubernetes.default.svc.cluster.local")?,
        ];
        server.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server.signed_by(&server_key, &issuer)?;
        write(&self.apiserver_cert(), &server_cert.pem())?;
        write(&self.apiserver_key(), &server_key.serialize_pem())?;

        let admin_key = KeyPair::generate()?;
        let mut admin = base_params("everynode-admin", Some("system:masters"))?;
        admin.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_cert = admin.signed_by(&admin_key, &issuer)?;
        write(&self.admin_cert(), &admin_cert.pem())?;
        write(&self.admin_key(), &admin_key.serialize_pem())?;

        let sa_key = KeyPair::generate()?;
        write(&self.sa_key(), &sa_key.serialize_pem())?;
        write(&self.sa_pub(), &sa_key.public_key_pem())
    }
}

fn base_params(common_name: &str, organization: Option<&str>) -> Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    if let Some(o) = organization {
        dn.push(DnType::OrganizationName, o);
    }
    dn.push(DnType::CommonName, common_name);
    p.distinguished_name = dn;
    p.not_before = date_time_ymd(2020, 1, 1);
    p.not_after = date_time_ymd(2100, 1, 1);
    Ok(p)
}

fn dns(name: &str) -> Result<SanType> {
    Ok(SanType::DnsName(name.try_into()?))
}

fn write(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).map_err(|e| Error::io("write", path, e))
}

/// Writes the admin kubeconfig for an API server on `127.0.0.1:<port>`.
pub fn write_kubeconfig(path: &Path, pki: &Pki, apiserver_port: u16, name: &str) -> Result<()> {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: https://127.0.0.1:{apiserver_port}\n    certificate-authority: {ca}\nusers:\n- name: {name}-admin\n  user:\n    client-certificate: {cert}\n    client-key: {key}\ncontexts:\n- name: {name}\n  context:\n    cluster: {name}\n    user: {name}-admin\n    namespace: default\ncurrent-context: {name}\n",
        ca = pki.ca_cert().display(),
        cert = pki.admin_cert().display(),
        key = pki.admin_key().display(),
    );
    write(path, &text)
}

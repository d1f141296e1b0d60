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

    /// Client certificate of an extra identity (see [`Pki::generate_client`]).
    #[must_use]
    pub fn client_cert(&self, user: &str) -> PathBuf {
        self.dir.join(format!("client-{user}.crt"))
    }

    /// Client key of an extra identity.
    #[must_use]
    pub fn client_key(&self, user: &str) -> PathBuf {
        self.dir.join(format!("client-{user}.key"))
    }

    /// Generates a client certificate `CN=<user>, O=<organization>` signed by the cluster CA
    /// (which [`Pki::generate`] must have made). Benchmarks give each measured process its own
    /// identity this way, so the API server's audit log tells their requests apart.
    pub fn generate_client(&self, user: &str, organization: &str) -> Result<()> {
        let read = |path: PathBuf| {
            std::fs::read_to_string(&path).map_err(|e| Error::io("read", path.clone(), e))
        };
        // The CA's parameters are fixed (`ca_params`); with its stored key they sign exactly as
        // the CA certificate on disk does.
        let ca_key = KeyPair::from_pem(&read(self.ca_key())?)?;
        let issuer = Issuer::new(ca_params()?, ca_key);
        let key = KeyPair::generate()?;
        let mut params = base_params(user, Some(organization))?;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &issuer)?;
        write(&self.client_cert(user), &cert.pem())?;
        write(&self.client_key(user), &key.serialize_pem())
    }

    /// Generates every file, overwriting existing ones.
    pub fn generate(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| Error::io("create directory", &self.dir, e))?;

        let ca_key = KeyPair::generate()?;
        let ca = ca_params()?;
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

fn ca_params() -> Result<CertificateParams> {
    let mut ca = base_params("everynode-ca", None)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(ca)
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
    write_kubeconfig_with(
        path,
        pki,
        apiserver_port,
        name,
        &pki.admin_cert(),
        &pki.admin_key(),
    )
}

/// Writes a kubeconfig for an API server on `127.0.0.1:<port>` that authenticates with the given
/// client certificate and key.
pub fn write_kubeconfig_with(
    path: &Path,
    pki: &Pki,
    apiserver_port: u16,
    name: &str,
    cert: &Path,
    key: &Path,
) -> Result<()> {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: https://127.0.0.1:{apiserver_port}\n    certificate-authority: {ca}\nusers:\n- name: {name}-admin\n  user:\n    client-certificate: {cert}\n    client-key: {key}\ncontexts:\n- name: {name}\n  context:\n    cluster: {name}\n    user: {name}-admin\n    namespace: default\ncurrent-context: {name}\n",
        ca = pki.ca_cert().display(),
        cert = cert.display(),
        key = key.display(),
    );
    write(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_identity_is_signed_by_the_cluster_ca() {
        let dir = std::env::temp_dir().join(format!("everynode-pki-test-{}", std::process::id()));
        let pki = Pki::at(&dir);
        pki.generate().unwrap();
        pki.generate_client("bench-user", "system:masters").unwrap();
        let cert = std::fs::read_to_string(pki.client_cert("bench-user")).unwrap();
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
        KeyPair::from_pem(&std::fs::read_to_string(pki.client_key("bench-user")).unwrap()).unwrap();
        // That the API server accepts it is checked by every `cargo xtask bench` run (the
        // measured controllers authenticate with such identities).
        let kc = dir.join("kubeconfig-bench-user");
        write_kubeconfig_with(
            &kc,
            &pki,
            16443,
            "t",
            &pki.client_cert("bench-user"),
            &pki.client_key("bench-user"),
        )
        .unwrap();
        let text = std::fs::read_to_string(&kc).unwrap();
        assert!(text.contains("client-bench-user.crt"));
        assert!(text.contains("https://127.0.0.1:16443"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

// SPDX-License-Identifier: Apache-2.0

//! A small certificate authority (rcgen, ECDSA P-256) for a control plane: the apiserver's
//! serving certificate, client certificates whose subject is the Kubernetes user (common
//! name) and groups (organizations), and the service-account signing key.

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::Error;

/// A certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct CertifiedKey {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// The private key (PKCS#8 PEM).
    pub key_pem: String,
}

/// What a certificate of [`CertificateAuthority::certificate`] is for (its extended key
/// usages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// TLS server authentication.
    pub server: bool,
    /// TLS client authentication.
    pub client: bool,
}

/// A certificate authority that issues serving and client certificates.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

#[allow(clippy::needless_pass_by_value)] // `map_err` hands the error over by value
fn pki(e: rcgen::Error) -> Error {
    Error::Pki(e.to_string())
}

/// A CA's certificate parameters: its name, CA constraints and usages (the same for a new
/// CA and one rebuilt from its key, so that both issue alike).
fn ca_params(common_name: &str) -> Result<CertificateParams, Error> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(pki)?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

impl CertificateAuthority {
    /// A new self-signed CA named `common_name`.
    pub fn new(common_name: &str) -> Result<Self, Error> {
        let key = KeyPair::generate().map_err(pki)?;
        let params = ca_params(common_name)?;
        let cert = params.self_signed(&key).map_err(pki)?;
        Ok(CertificateAuthority {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA's certificate (PEM): what clients and servers trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key (PKCS#8 PEM), to keep it (as Cilium's chart keeps `cilium-ca`)
    /// and issue more later with [`CertificateAuthority::from_pem`].
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// A CA made earlier by [`CertificateAuthority::new`] with `common_name`, from its
    /// certificate and key: what it issues verifies against that certificate (the issuer's
    /// name and key identifier are the same).
    pub fn from_pem(common_name: &str, cert_pem: &str, key_pem: &str) -> Result<Self, Error> {
        let key = KeyPair::from_pem(key_pem).map_err(pki)?;
        if !cert_pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(Error::Pki("the CA certificate is not PEM".into()));
        }
        Ok(CertificateAuthority {
            cert_pem: cert_pem.to_owned(),
            issuer: Issuer::new(ca_params(common_name)?, key),
        })
    }

    /// A certificate for `common_name` with these DNS names as subject alternative names
    /// (`*.` wildcards allowed), for serving, for client authentication or both, valid from
    /// `not_before` to `not_after`.
    pub fn certificate(
        &self,
        common_name: &str,
        dns_names: &[&str],
        usage: Usage,
        not_before: std::time::SystemTime,
        not_after: std::time::SystemTime,
    ) -> Result<CertifiedKey, Error> {
        let sans: Vec<String> = dns_names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(sans).map_err(pki)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        if usage.server {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if usage.client {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        self.issue(&params)
    }

    /// A serving certificate for these DNS names and addresses.
    pub fn serving(&self, dns_names: &[&str], ips: &[IpAddr]) -> Result<CertifiedKey, Error> {
        let sans: Vec<String> = dns_names
            .iter()
            .map(|n| (*n).to_owned())
            .chain(ips.iter().map(IpAddr::to_string))
            .collect();
        let mut params = CertificateParams::new(sans).map_err(pki)?;
        params.distinguished_name.push(
            DnType::CommonName,
            dns_names.first().copied().unwrap_or("server"),
        );
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(&params)
    }

    /// A client certificate for Kubernetes user `user` in `groups` (the apiserver reads the
    /// common name as the user and each organization as a group).
    pub fn client(&self, user: &str, groups: &[&str]) -> Result<CertifiedKey, Error> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(pki)?;
        for g in groups {
            params.distinguished_name.push(DnType::OrganizationName, *g);
        }
        params.distinguished_name.push(DnType::CommonName, user);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(&params)
    }

    fn issue(&self, params: &CertificateParams) -> Result<CertifiedKey, Error> {
        let key = KeyPair::generate().map_err(pki)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(pki)?;
        Ok(CertifiedKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A new key pair as PEM: the private key (PKCS#8) and its public key, e.g. the
/// service-account signing key (ES256) and what verifies it.
pub fn key_pair_pem() -> Result<(String, String), Error> {
    let key = KeyPair::generate().map_err(pki)?;
    Ok((key.serialize_pem(), key.public_key_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_pem_certificates_and_keys() {
        let ca = CertificateAuthority::new("test-ca").unwrap();
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let s = ca
            .serving(&["kubernetes"], &["127.0.0.1".parse().unwrap()])
            .unwrap();
        assert!(s.cert_pem.contains("BEGIN CERTIFICATE"));
        assert!(s.key_pem.contains("BEGIN PRIVATE KEY"));
        let c = ca.client("admin", &["system:masters"]).unwrap();
        // The same CA again from its PEM issues what the first one's certificate verifies
        // (checked against rustls in cilium-hubble's TLS tests); a bad key is an error.
        let again =
            CertificateAuthority::from_pem("test-ca", ca.cert_pem(), &ca.key_pem()).unwrap();
        let now = std::time::SystemTime::now();
        let usage = Usage {
            server: true,
            client: false,
        };
        let w = again
            .certificate(
                "*.default.hubble-grpc.cilium.io",
                &["*.default.hubble-grpc.cilium.io"],
                usage,
                now,
                now + std::time::Duration::from_secs(3600),
            )
            .unwrap();
        assert!(w.cert_pem.contains("BEGIN CERTIFICATE"));
        assert!(CertificateAuthority::from_pem("test-ca", ca.cert_pem(), "junk").is_err());
        assert!(CertificateAuthority::from_pem("test-ca", "junk", &ca.key_pem()).is_err());
        assert_ne!(c.cert_pem, s.cert_pem);
        let (private, public) = key_pair_pem().unwrap();
        assert!(private.contains("BEGIN PRIVATE KEY"));
        assert!(public.contains("BEGIN PUBLIC KEY"));
    }
}

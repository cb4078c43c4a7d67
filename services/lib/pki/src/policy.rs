//! Enrollment policy: does this CSR ask for what the profile and the device's names allow?

use ragw_domain::Profile;
use ragw_domain::names::{is_local_ip, is_localhost, normalize_dns_name};
use ragw_domain::profile::AssignedNames;

use crate::csr::{ParsedCsr, parse_csr};
use crate::error::CsrError;

/// Applies `profile` and the names assigned to the device to a parsed CSR.
///
/// Checks, in this order (the first failure is reported):
/// 1. the key type is allowed by the profile ([`CsrError::KeyNotAllowed`]);
/// 2. the CSR has at least one subjectAltName entry ([`CsrError::MissingNames`]);
/// 3. no localhost name ([`CsrError::Localhost`]); IP addresses only when the profile allows
///    them ([`CsrError::IpNotAllowed`]) and only private, link-local or loopback ones
///    ([`CsrError::PublicIp`]);
/// 4. every dNSName is one of `assigned.required` or `assigned.optional`
///    ([`CsrError::NameNotAssigned`]);
/// 5. every required name is present ([`CsrError::MissingNames`]);
/// 6. a subject common name, if present, is one of the dNSNames
///    ([`CsrError::CommonNameNotInSans`]).
///
/// Repeated SAN entries are harmless ([`parse_csr`] already drops repeats). Whether
/// `<label>.local` may be requested is decided by whoever builds `assigned`
/// ([`Profile::names_for`] only offers it when the profile sets `allow_local_name`).
pub fn check_csr(
    csr: &ParsedCsr,
    profile: &Profile,
    assigned: &AssignedNames,
) -> Result<(), CsrError> {
    if !profile.admits_key(&csr.key) {
        return Err(CsrError::KeyNotAllowed {
            found: csr.key,
            allowed: profile.allowed_keys.clone(),
        });
    }

    if csr.dns_names.is_empty() && csr.ip_addresses.is_empty() {
        return Err(CsrError::MissingNames {
            expected: assigned.required.clone(),
        });
    }

    if let Some(name) = csr.dns_names.iter().find(|n| is_localhost(n)) {
        return Err(CsrError::Localhost { name: name.clone() });
    }
    for ip in &csr.ip_addresses {
        if !profile.allow_ip_sans {
            return Err(CsrError::IpNotAllowed { ip: *ip });
        }
        if !is_local_ip(ip) {
            return Err(CsrError::PublicIp { ip: *ip });
        }
    }

    let required: Vec<String> = assigned
        .required
        .iter()
        .map(|n| normalize_dns_name(n))
        .collect();
    let optional: Vec<String> = assigned
        .optional
        .iter()
        .map(|n| normalize_dns_name(n))
        .collect();
    let requested: Vec<String> = csr
        .dns_names
        .iter()
        .map(|n| normalize_dns_name(n))
        .collect();

    if let Some(name) = requested
        .iter()
        .find(|n| !required.contains(n) && !optional.contains(n))
    {
        return Err(CsrError::NameNotAssigned {
            name: name.clone(),
            expected: assigned.required.clone(),
        });
    }

    if required.iter().any(|r| !requested.contains(r)) {
        return Err(CsrError::MissingNames {
            expected: assigned.required.clone(),
        });
    }

    if let Some(cn) = &csr.subject_common_name
        && !requested.contains(&normalize_dns_name(cn))
    {
        return Err(CsrError::CommonNameNotInSans {
            common_name: cn.clone(),
            dns_names: csr.dns_names.clone(),
        });
    }

    Ok(())
}

/// [`parse_csr`] then [`check_csr`].
pub fn parse_and_check(
    der: &[u8],
    profile: &Profile,
    assigned: &AssignedNames,
) -> Result<ParsedCsr, CsrError> {
    let csr = parse_csr(der)?;
    check_csr(&csr, profile, assigned)?;
    Ok(csr)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::test_support::*;
    use ragw_domain::{ErrorClass, KeyType};
    use rcgen::{PKCS_ECDSA_P256_SHA256, PKCS_ED25519, SanType};

    fn p256(sans: Vec<SanType>, cn: Option<&str>) -> Vec<u8> {
        make_csr(&PKCS_ECDSA_P256_SHA256, sans, cn)
    }

    fn check(der: &[u8], profile: &Profile) -> Result<ParsedCsr, CsrError> {
        parse_and_check(der, profile, &assigned(profile))
    }

    #[test]
    fn valid_p256_csr_passes() {
        let profile = test_profile();
        let csr = check(&p256(vec![dns(NAME)], Some(NAME)), &profile).unwrap();
        assert_eq!(csr.dns_names, vec![NAME]);
        // Without a CN too, and with case and trailing-dot differences.
        check(
            &p256(vec![dns("AbcDefGhi.Devices.Example.Com.")], None),
            &profile,
        )
        .unwrap();
        check(
            &p256(vec![dns(NAME)], Some("ABCDEFGHI.devices.example.com")),
            &profile,
        )
        .unwrap();
    }

    #[test]
    fn key_must_be_allowed_by_the_profile() {
        let mut profile = test_profile();
        let err = check(&fixture("rsa2048.der"), &profile).unwrap_err();
        assert_eq!(
            err,
            CsrError::KeyNotAllowed {
                found: KeyType::Rsa { min_bits: 2048 },
                allowed: profile.allowed_keys.clone()
            }
        );
        assert_eq!(err.teap_error_code(), 1022);
        assert_eq!(err.class(), ErrorClass::BadRequest);

        // The key check comes before the name checks.
        let ed = make_csr(&PKCS_ED25519, vec![dns("foo.example.com")], None);
        assert!(matches!(
            check(&ed, &profile),
            Err(CsrError::KeyNotAllowed {
                found: KeyType::Ed25519,
                ..
            })
        ));

        profile.allowed_keys = vec![KeyType::Ed25519, KeyType::Rsa { min_bits: 2048 }];
        check(&fixture("rsa2048.der"), &profile).unwrap();
        check(&make_csr(&PKCS_ED25519, vec![dns(NAME)], None), &profile).unwrap();
        assert!(matches!(
            check(&p256(vec![dns(NAME)], None), &profile),
            Err(CsrError::KeyNotAllowed {
                found: KeyType::EcdsaP256,
                ..
            })
        ));
    }

    #[test]
    fn foreign_name_is_refused_naming_the_assigned_one() {
        let profile = test_profile();
        let err = check(&p256(vec![dns("foo.example.com")], None), &profile).unwrap_err();
        assert_eq!(
            err,
            CsrError::NameNotAssigned {
                name: "foo.example.com".into(),
                expected: vec![NAME.into()]
            }
        );
        assert_eq!(
            err.to_string(),
            format!("the CSR asks for \"foo.example.com\", but this device is assigned \"{NAME}\"")
        );
        assert_eq!(err.class(), ErrorClass::BadIdentity);
        assert_eq!(err.teap_error_code(), 1024);
    }

    #[test]
    fn extra_name_is_refused() {
        let profile = test_profile();
        let err = check(
            &p256(vec![dns(NAME), dns("other.devices.example.com")], None),
            &profile,
        )
        .unwrap_err();
        assert!(
            matches!(&err, CsrError::NameNotAssigned { name, .. } if name == "other.devices.example.com"),
            "{err:?}"
        );
        assert!(err.to_string().contains(NAME), "{err}");
    }

    #[test]
    fn missing_names_are_refused() {
        let mut profile = test_profile();
        let err = check(&p256(vec![], Some(NAME)), &profile).unwrap_err();
        assert_eq!(
            err,
            CsrError::MissingNames {
                expected: vec![NAME.into()]
            }
        );
        assert!(err.to_string().contains(NAME), "{err}");
        assert_eq!(err.teap_error_code(), 1024);

        // Only the optional name, not the required one.
        profile.allow_local_name = true;
        let err = check(&p256(vec![dns("abcdefghi.local")], None), &profile).unwrap_err();
        assert!(matches!(err, CsrError::MissingNames { .. }), "{err:?}");

        // Only an IP address.
        profile.allow_ip_sans = true;
        let err = check(&p256(vec![ip("10.0.0.7")], None), &profile).unwrap_err();
        assert!(matches!(err, CsrError::MissingNames { .. }), "{err:?}");
    }

    #[test]
    fn localhost_is_refused() {
        let profile = test_profile();
        for name in ["localhost", "abcdefghi.localhost"] {
            let err = check(&p256(vec![dns(NAME), dns(name)], None), &profile).unwrap_err();
            assert_eq!(err, CsrError::Localhost { name: name.into() });
            assert_eq!(err.teap_error_code(), 1024);
        }
    }

    #[test]
    fn ip_addresses_follow_the_profile() {
        let mut profile = test_profile();
        let private = p256(vec![dns(NAME), ip("192.168.1.20"), ip("fe80::1")], None);
        let err = check(&private, &profile).unwrap_err();
        assert_eq!(
            err,
            CsrError::IpNotAllowed {
                ip: "192.168.1.20".parse().unwrap()
            }
        );
        assert_eq!(err.teap_error_code(), 1024);

        profile.allow_ip_sans = true;
        let csr = check(&private, &profile).unwrap();
        assert_eq!(csr.ip_addresses.len(), 2);

        let public = p256(vec![dns(NAME), ip("10.0.0.1"), ip("8.8.8.8")], None);
        let err = check(&public, &profile).unwrap_err();
        assert_eq!(
            err,
            CsrError::PublicIp {
                ip: "8.8.8.8".parse().unwrap()
            }
        );
        assert!(err.to_string().contains("8.8.8.8"), "{err}");
        let public6 = p256(vec![dns(NAME), ip("2001:db8::1")], None);
        assert!(matches!(
            check(&public6, &profile),
            Err(CsrError::PublicIp { .. })
        ));
    }

    #[test]
    fn local_name_only_when_the_profile_allows_it() {
        let mut profile = test_profile();
        let der = p256(vec![dns(NAME), dns("abcdefghi.local")], None);
        let err = check(&der, &profile).unwrap_err();
        assert!(
            matches!(&err, CsrError::NameNotAssigned { name, .. } if name == "abcdefghi.local"),
            "{err:?}"
        );

        profile.allow_local_name = true;
        let csr = check(&der, &profile).unwrap();
        assert_eq!(csr.dns_names, vec![NAME, "abcdefghi.local"]);
        // Another device's .local name is still refused.
        let other = p256(vec![dns(NAME), dns("zzzzzzzzz.local")], None);
        assert!(matches!(
            check(&other, &profile),
            Err(CsrError::NameNotAssigned { .. })
        ));
    }

    #[test]
    fn common_name_must_be_a_san() {
        let mut profile = test_profile();
        let err = check(&p256(vec![dns(NAME)], Some("My Device")), &profile).unwrap_err();
        assert_eq!(
            err,
            CsrError::CommonNameNotInSans {
                common_name: "My Device".into(),
                dns_names: vec![NAME.into()]
            }
        );
        assert_eq!(err.teap_error_code(), 1024);

        profile.allow_local_name = true;
        check(
            &p256(
                vec![dns(NAME), dns("abcdefghi.local")],
                Some("abcdefghi.local"),
            ),
            &profile,
        )
        .unwrap();
    }

    #[test]
    fn repeated_names_are_harmless() {
        let profile = test_profile();
        let csr = check(&p256(vec![dns(NAME), dns(NAME)], Some(NAME)), &profile).unwrap();
        assert_eq!(csr.dns_names, vec![NAME]);

        // Even in a hand-built ParsedCsr.
        let mut csr = csr;
        csr.dns_names.push(NAME.to_uppercase());
        check_csr(&csr, &profile, &assigned(&profile)).unwrap();
    }
}

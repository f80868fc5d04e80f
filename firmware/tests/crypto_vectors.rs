//! Our aes+ctr+ghash composition against independent references: Wycheproof's AES-GCM and
//! AES-GMAC vectors, and the `aes-gcm` crate on random inputs.

use aes_gcm::aead::{AeadInOut, KeyInit};
use iipnic_firmware::esp::AesGcm;
use proptest::prelude::*;
use wycheproof::TestResult;

#[test]
fn wycheproof_aes_gcm_96_bit_nonces() {
    let set = wycheproof::aead::TestSet::load(wycheproof::aead::TestName::AesGcm).unwrap();
    let mut checked = 0;
    for group in set.test_groups {
        // ESP's nonce is salt (4) + IV (8); AES-192 is not offered by this NIC.
        if group.nonce_size != 96 || group.key_size == 192 {
            continue;
        }
        for test in group.tests {
            let gcm = AesGcm::new(&test.key).unwrap();
            let nonce: [u8; 12] = test.nonce.as_slice().try_into().unwrap();
            let aad: &[u8] = &test.aad;
            let mut data = test.pt.to_vec();
            let tag = gcm.seal(&nonce, &[aad], &mut data);
            let matches = data == *test.ct && tag[..test.tag.len()] == *test.tag;
            let mut ct = test.ct.to_vec();
            let opened = gcm.open(&nonce, &[aad], &mut ct, &test.tag);
            match test.result {
                TestResult::Valid | TestResult::Acceptable => {
                    assert!(matches, "tcId {} seal: {}", test.tc_id, test.comment);
                    assert!(opened.is_ok(), "tcId {} open: {}", test.tc_id, test.comment);
                    assert_eq!(ct, *test.pt, "tcId {}", test.tc_id);
                }
                TestResult::Invalid => {
                    assert!(
                        opened.is_err(),
                        "tcId {} accepted: {}",
                        test.tc_id,
                        test.comment
                    );
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 120, "only {checked} vectors exercised");
}

#[test]
fn wycheproof_aes_gmac_96_bit_nonces() {
    use wycheproof::mac_with_nonce::{TestName, TestSet};
    let set = TestSet::load(TestName::Gmac).unwrap();
    let mut checked = 0;
    for group in set.test_groups {
        if group.nonce_size != 96 || group.key_size == 192 {
            continue;
        }
        for test in group.tests {
            let gcm = AesGcm::new(&test.key).unwrap();
            let nonce: [u8; 12] = test.nonce.as_slice().try_into().unwrap();
            let msg: &[u8] = &test.msg;
            let verified = gcm.verify_mac(&nonce, &[msg], &test.tag).is_ok();
            match test.result {
                TestResult::Valid | TestResult::Acceptable => {
                    assert!(verified, "tcId {}: {}", test.tc_id, test.comment)
                }
                TestResult::Invalid => {
                    assert!(!verified, "tcId {} accepted: {}", test.tc_id, test.comment)
                }
            }
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} vectors exercised");
}

proptest! {
    /// Same ciphertext and tag as the `aes-gcm` crate for any key, nonce, AAD (split into
    /// pieces at arbitrary points) and plaintext.
    #[test]
    fn matches_the_aes_gcm_crate(
        key in prop::collection::vec(any::<u8>(), 16..=16).prop_union(prop::collection::vec(any::<u8>(), 32..=32)),
        nonce in any::<[u8; 12]>(),
        aad in prop::collection::vec(any::<u8>(), 0..80),
        split in any::<prop::sample::Index>(),
        plaintext in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        let ours = AesGcm::new(&key).unwrap();
        let mut our_data = plaintext.clone();
        let cut = split.index(aad.len() + 1);
        let our_tag = ours.seal(&nonce, &[&aad[..cut], &aad[cut..]], &mut our_data);

        let mut their_data = plaintext.clone();
        let their_tag = if key.len() == 16 {
            aes_gcm::Aes128Gcm::new_from_slice(&key).unwrap()
                .encrypt_inout_detached(&nonce.into(), &aad, their_data.as_mut_slice().into()).unwrap().to_vec()
        } else {
            aes_gcm::Aes256Gcm::new_from_slice(&key).unwrap()
                .encrypt_inout_detached(&nonce.into(), &aad, their_data.as_mut_slice().into()).unwrap().to_vec()
        };
        prop_assert_eq!(&our_data, &their_data);
        prop_assert_eq!(&our_tag[..], &their_tag[..]);
        prop_assert!(ours.open(&nonce, &[&aad], &mut our_data, &our_tag[..12]).is_ok());
        prop_assert_eq!(our_data, plaintext);
    }
}

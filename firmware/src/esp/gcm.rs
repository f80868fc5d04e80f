//! AES-GCM (NIST SP 800-38D) and AES-GMAC composed from the `aes`, `ctr` and `ghash` crates.
//!
//! ESP needs more than a one-shot AEAD call: the associated data of RFC 4106 with ESN and the
//! whole authenticated span of RFC 4543 GMAC are not contiguous in the packet, so the GHASH
//! input is fed as a list of slices without padding between them. Everything runs in place
//! on the packet buffer, with no allocation.

use aes::cipher::{BlockCipherEncrypt, BlockSizeUser, InnerIvInit, KeyInit, StreamCipherCore};
use aes::{Aes128, Aes256};
use ghash::GHash;
use ghash::universal_hash::UniversalHash;
use ghash::universal_hash::array::Array;
use ghash::universal_hash::consts::U16;
use subtle::ConstantTimeEq;

/// Length of a full GCM tag; ESP may send a prefix of it (RFC 4106 section 6).
pub const TAG_LEN: usize = 16;
/// GCM nonce length used by ESP: 4-byte salt and 8-byte explicit IV.
pub const NONCE_LEN: usize = 12;

/// The key is not 16 or 32 bytes long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidKeyLength;

/// The tag did not verify (or asked for a length GCM cannot give).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthenticationFailed;

#[derive(Clone)]
enum BlockCipher {
    Aes128(Aes128),
    Aes256(Aes256),
}

/// An AES-GCM key schedule with its GHASH key; cheap to use for many packets.
#[derive(Clone)]
pub struct AesGcm {
    cipher: BlockCipher,
    ghash: GHash,
}

impl core::fmt::Debug for AesGcm {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never print key material.
        let bits = match self.cipher {
            BlockCipher::Aes128(_) => 128,
            BlockCipher::Aes256(_) => 256,
        };
        f.debug_struct("AesGcm").field("key_bits", &bits).finish()
    }
}

impl AesGcm {
    /// Expands a 16-byte (AES-128) or 32-byte (AES-256) key.
    pub fn new(key: &[u8]) -> Result<Self, InvalidKeyLength> {
        let cipher = match key.len() {
            16 => BlockCipher::Aes128(Aes128::new_from_slice(key).map_err(|_| InvalidKeyLength)?),
            32 => BlockCipher::Aes256(Aes256::new_from_slice(key).map_err(|_| InvalidKeyLength)?),
            _ => return Err(InvalidKeyLength),
        };
        let mut h = Array::<u8, U16>::default();
        match &cipher {
            BlockCipher::Aes128(c) => c.encrypt_block(&mut h),
            BlockCipher::Aes256(c) => c.encrypt_block(&mut h),
        }
        Ok(AesGcm {
            cipher,
            ghash: GHash::new(&h),
        })
    }

    /// Encrypts `data` in place and returns the full 16-byte tag over `aad` (the slices taken
    /// as one string) and the ciphertext.
    pub fn seal(&self, nonce: &[u8; NONCE_LEN], aad: &[&[u8]], data: &mut [u8]) -> [u8; TAG_LEN] {
        match &self.cipher {
            BlockCipher::Aes128(c) => seal_with(c, &self.ghash, nonce, aad, data),
            BlockCipher::Aes256(c) => seal_with(c, &self.ghash, nonce, aad, data),
        }
    }

    /// Verifies `tag` (1 to 16 bytes, a prefix of the full tag) in constant time, then decrypts
    /// `data` in place. On failure `data` is left as it was.
    pub fn open(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[&[u8]],
        data: &mut [u8],
        tag: &[u8],
    ) -> Result<(), AuthenticationFailed> {
        match &self.cipher {
            BlockCipher::Aes128(c) => open_with(c, &self.ghash, nonce, aad, data, tag),
            BlockCipher::Aes256(c) => open_with(c, &self.ghash, nonce, aad, data, tag),
        }
    }

    /// GMAC (RFC 4543): the GCM tag of `aad` with an empty plaintext.
    pub fn mac(&self, nonce: &[u8; NONCE_LEN], aad: &[&[u8]]) -> [u8; TAG_LEN] {
        self.seal(nonce, aad, &mut [])
    }

    /// Checks a GMAC tag prefix in constant time.
    pub fn verify_mac(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[&[u8]],
        tag: &[u8],
    ) -> Result<(), AuthenticationFailed> {
        self.open(nonce, aad, &mut [], tag)
    }
}

type Ctr32<'c, C> = ctr::CtrCore<&'c C, ctr::flavors::Ctr32BE>;

/// The counter positioned at J0, and E(K, J0): the block that masks the GHASH output.
/// The same counter then continues at inc32(J0) for the payload, so the key schedule is
/// loaded once per packet.
fn start_ctr<'c, C>(cipher: &'c C, nonce: &[u8; NONCE_LEN]) -> (Ctr32<'c, C>, [u8; TAG_LEN])
where
    C: BlockCipherEncrypt + BlockSizeUser<BlockSize = U16>,
{
    let mut ctr = Ctr32::<C>::inner_iv_init(cipher, &j0(nonce));
    let mut mask = Array::<u8, U16>::default();
    ctr.write_keystream_block(&mut mask);
    (ctr, mask.into())
}

fn seal_with<C>(
    cipher: &C,
    ghash: &GHash,
    nonce: &[u8; NONCE_LEN],
    aad: &[&[u8]],
    data: &mut [u8],
) -> [u8; TAG_LEN]
where
    C: BlockCipherEncrypt + BlockSizeUser<BlockSize = U16>,
{
    let (ctr, mask) = start_ctr(cipher, nonce);
    if !data.is_empty() {
        ctr.apply_keystream_partial(data.into());
    }
    tag(ghash, mask, aad, data)
}

fn open_with<C>(
    cipher: &C,
    ghash: &GHash,
    nonce: &[u8; NONCE_LEN],
    aad: &[&[u8]],
    data: &mut [u8],
    received: &[u8],
) -> Result<(), AuthenticationFailed>
where
    C: BlockCipherEncrypt + BlockSizeUser<BlockSize = U16>,
{
    let (ctr, mask) = start_ctr(cipher, nonce);
    let expected = tag(ghash, mask, aad, data);
    let expected = expected.get(..received.len()).ok_or(AuthenticationFailed)?;
    if received.is_empty() || !bool::from(expected.ct_eq(received)) {
        return Err(AuthenticationFailed);
    }
    if !data.is_empty() {
        ctr.apply_keystream_partial(data.into());
    }
    Ok(())
}

/// GHASH(H, A, C) XOR E(K, J0) (SP 800-38D algorithm 4, steps 5-6).
fn tag(ghash: &GHash, mask: [u8; TAG_LEN], aad: &[&[u8]], ciphertext: &[u8]) -> [u8; TAG_LEN] {
    let mut stream = GhashStream::new(ghash.clone());
    let mut aad_len = 0u64;
    for part in aad {
        stream.update(part);
        aad_len += part.len() as u64;
    }
    stream.pad();
    stream.update(ciphertext);
    stream.pad();
    let mut lengths = [0u8; 16];
    lengths[..8].copy_from_slice(&(aad_len * 8).to_be_bytes());
    lengths[8..].copy_from_slice(&((ciphertext.len() as u64) * 8).to_be_bytes());
    stream.update(&lengths);
    let mut tag: [u8; TAG_LEN] = stream.ghash.finalize().into();
    for (t, m) in tag.iter_mut().zip(mask) {
        *t ^= m;
    }
    tag
}

/// J0 = nonce || 0^31 || 1 for a 96-bit nonce.
fn j0(nonce: &[u8; NONCE_LEN]) -> Array<u8, U16> {
    let mut block = Array::<u8, U16>::default();
    block[..NONCE_LEN].copy_from_slice(nonce);
    block[15] = 1;
    block
}

/// GHASH over a string given in pieces: only the end of the string is zero-padded.
struct GhashStream {
    ghash: GHash,
    partial: [u8; 16],
    fill: usize,
}

impl GhashStream {
    fn new(ghash: GHash) -> Self {
        GhashStream {
            ghash,
            partial: [0; 16],
            fill: 0,
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        if self.fill > 0 {
            let take = (16 - self.fill).min(data.len());
            let (head, rest) = data.split_at(take);
            if let Some(dst) = self.partial.get_mut(self.fill..self.fill + take) {
                dst.copy_from_slice(head);
            }
            self.fill += take;
            data = rest;
            if self.fill < 16 {
                return;
            }
            self.ghash.update(&[Array::from(self.partial)]);
            self.fill = 0;
        }
        let (blocks, tail) = Array::<u8, U16>::slice_as_chunks(data);
        self.ghash.update(blocks);
        if let Some(dst) = self.partial.get_mut(..tail.len()) {
            dst.copy_from_slice(tail);
        }
        self.fill = tail.len();
    }

    fn pad(&mut self) {
        if self.fill > 0 {
            if let Some(rest) = self.partial.get_mut(self.fill..) {
                rest.fill(0);
            }
            self.ghash.update(&[Array::from(self.partial)]);
            self.fill = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // NIST GCM specification (McGrew & Viega), test case 4: AES-128, 96-bit IV, 20-byte AAD.
    #[test]
    fn gcm_spec_test_case_4() {
        let key = hex::decode("feffe9928665731c6d6a8f9467308308").unwrap();
        let nonce: [u8; 12] = hex::decode("cafebabefacedbaddecaf888")
            .unwrap()
            .try_into()
            .unwrap();
        let mut pt = hex::decode(
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
        )
        .unwrap();
        let aad = hex::decode("feedfacedeadbeeffeedfacedeadbeefabaddad2").unwrap();
        let gcm = AesGcm::new(&key).unwrap();
        // Split the AAD unevenly to exercise the streaming GHASH.
        let tag = gcm.seal(&nonce, &[&aad[..3], &aad[3..17], &aad[17..]], &mut pt);
        assert_eq!(
            hex::encode(&pt),
            "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091"
        );
        assert_eq!(hex::encode(tag), "5bc94fbc3221a5db94fae95ae7121a47");
        gcm.open(&nonce, &[&aad], &mut pt, &tag[..12]).unwrap();
        assert!(hex::encode(&pt).starts_with("d9313225"));
    }

    #[test]
    fn wrong_tag_leaves_data_untouched() {
        let gcm = AesGcm::new(&[7u8; 32]).unwrap();
        let nonce = [1u8; 12];
        let mut data = *b"attack at dawn!!";
        let mut tag = gcm.seal(&nonce, &[b"hdr"], &mut data);
        let sealed = data;
        tag[0] ^= 1;
        assert_eq!(
            gcm.open(&nonce, &[b"hdr"], &mut data, &tag),
            Err(AuthenticationFailed)
        );
        assert_eq!(data, sealed);
        assert!(gcm.open(&nonce, &[b"hdr"], &mut data, &[]).is_err());
    }

    #[test]
    fn rejects_bad_key_lengths() {
        assert!(AesGcm::new(&[0u8; 24]).is_err());
        assert!(AesGcm::new(&[]).is_err());
    }
}

//! ESP transforms: AES-GCM (RFC 4106) and AES-GMAC (RFC 4543) with 8-byte explicit IVs,
//! a 4-byte salt, 8/12/16-byte ICVs and ESN (RFC 4304).
//!
//! [`EspCipher::seal`] and [`EspCipher::open`] work on one contiguous span of the packet,
//! the ESP "envelope":
//!
//! ```text
//! | SPI | Seq | IV (8) | payload ... | padding | pad len | next hdr | ICV |
//! |<-------------------------- envelope ------------------------------->|
//!               |<----- encrypted with GCM, authenticated by GMAC ----->|
//! ```

pub mod gcm;
pub mod replay;

use serde::{Deserialize, Serialize};

use crate::wire::esp::HEADER_LEN;
pub use gcm::{AesGcm, AuthenticationFailed, InvalidKeyLength};

/// Explicit IV length for both RFC 4106 and RFC 4543.
pub const IV_LEN: usize = 8;
/// Salt length: the last four bytes of the keying material (RFC 4106 section 8.1).
pub const SALT_LEN: usize = 4;
/// ESP header plus IV: where the payload starts inside the envelope.
pub const PAYLOAD_OFFSET: usize = HEADER_LEN + IV_LEN;

/// The ESP transform of an SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// AES-GCM, confidentiality and integrity (RFC 4106).
    AesGcm,
    /// AES-GMAC, integrity only; the payload travels in clear (RFC 4543 ENCR_NULL_AUTH_AES_GMAC).
    AesGmac,
}

/// ICV length; RFC 4106 allows 8, 12 and 16 bytes (16 is the MUST).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum IcvLen {
    /// 8 bytes.
    Eight,
    /// 12 bytes.
    Twelve,
    /// 16 bytes.
    Sixteen,
}

impl IcvLen {
    /// The length in bytes.
    pub const fn bytes(self) -> usize {
        match self {
            IcvLen::Eight => 8,
            IcvLen::Twelve => 12,
            IcvLen::Sixteen => 16,
        }
    }
}

impl TryFrom<u8> for IcvLen {
    type Error = &'static str;
    fn try_from(value: u8) -> Result<Self, Self::Error> {
        match value {
            8 => Ok(IcvLen::Eight),
            12 => Ok(IcvLen::Twelve),
            16 => Ok(IcvLen::Sixteen),
            _ => Err("ICV length must be 8, 12 or 16 bytes"),
        }
    }
}

impl From<IcvLen> for u8 {
    fn from(value: IcvLen) -> u8 {
        value.bytes() as u8
    }
}

/// The envelope is shorter than header, IV, the two trailer bytes and the ICV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncated;

/// Keys and parameters of one direction of an SA: everything needed to seal or open.
#[derive(Clone)]
pub struct EspCipher {
    aead: AesGcm,
    salt: [u8; SALT_LEN],
    algorithm: Algorithm,
    icv_len: IcvLen,
}

impl core::fmt::Debug for EspCipher {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EspCipher")
            .field("algorithm", &self.algorithm)
            .field("icv_len", &self.icv_len.bytes())
            .finish_non_exhaustive()
    }
}

impl EspCipher {
    /// `keymat` is the AES key followed by the 4-byte salt (20 or 36 bytes), the way IKEv2
    /// and `ip xfrm` hand it over.
    pub fn new(
        algorithm: Algorithm,
        keymat: &[u8],
        icv_len: IcvLen,
    ) -> Result<Self, InvalidKeyLength> {
        let split = keymat.len().checked_sub(SALT_LEN).ok_or(InvalidKeyLength)?;
        let (key, salt) = keymat.split_at(split);
        let salt: [u8; SALT_LEN] = salt.try_into().map_err(|_| InvalidKeyLength)?;
        Ok(EspCipher {
            aead: AesGcm::new(key)?,
            salt,
            algorithm,
            icv_len,
        })
    }

    /// ICV length in bytes.
    pub fn icv_len(&self) -> usize {
        self.icv_len.bytes()
    }

    /// The transform.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Bytes added after the payload for a payload of `len` bytes: padding, pad length,
    /// next header and ICV.
    pub fn trailer_len(&self, payload_len: usize) -> usize {
        crate::wire::esp::pad_len(payload_len) + 2 + self.icv_len()
    }

    /// Encrypts (GCM) or authenticates (GMAC) a complete envelope in place and writes the ICV
    /// into its last bytes. Header, IV, payload and trailer must already be written.
    /// `seq_high` is the upper half of the ESN, `None` for 32-bit sequence numbers.
    pub fn seal(&self, envelope: &mut [u8], seq_high: Option<u32>) -> Result<(), Truncated> {
        let icv_len = self.icv_len();
        let body_end = envelope
            .len()
            .checked_sub(icv_len)
            .filter(|&end| end >= PAYLOAD_OFFSET + 2)
            .ok_or(Truncated)?;
        let (head, rest) = envelope.split_at_mut(PAYLOAD_OFFSET);
        let (body, icv) = rest.split_at_mut(body_end - PAYLOAD_OFFSET);
        let (nonce, aad_buf) = self.nonce_and_aad(head, seq_high);
        let aad_len = if seq_high.is_some() { 12 } else { 8 };
        let aad = aad_buf.get(..aad_len).unwrap_or_default();
        let tag = match self.algorithm {
            Algorithm::AesGcm => self.aead.seal(&nonce, &[aad], body),
            Algorithm::AesGmac => {
                let iv = head.get(HEADER_LEN..).unwrap_or_default();
                self.aead.mac(&nonce, &[aad, iv, body])
            }
        };
        icv.copy_from_slice(tag.get(..icv_len).unwrap_or_default());
        Ok(())
    }

    /// Verifies the ICV of an envelope and, for GCM, decrypts the payload in place.
    /// The envelope is unchanged when authentication fails.
    pub fn open(&self, envelope: &mut [u8], seq_high: Option<u32>) -> Result<(), OpenError> {
        let icv_len = self.icv_len();
        let body_end = envelope
            .len()
            .checked_sub(icv_len)
            .filter(|&end| end >= PAYLOAD_OFFSET + 2)
            .ok_or(OpenError::Truncated)?;
        let (head, rest) = envelope.split_at_mut(PAYLOAD_OFFSET);
        let (body, icv) = rest.split_at_mut(body_end - PAYLOAD_OFFSET);
        let (nonce, aad_buf) = self.nonce_and_aad(head, seq_high);
        let aad_len = if seq_high.is_some() { 12 } else { 8 };
        let aad = aad_buf.get(..aad_len).unwrap_or_default();
        match self.algorithm {
            Algorithm::AesGcm => self.aead.open(&nonce, &[aad], body, icv),
            Algorithm::AesGmac => {
                let iv = head.get(HEADER_LEN..).unwrap_or_default();
                self.aead.verify_mac(&nonce, &[aad, iv, body], icv)
            }
        }
        .map_err(|AuthenticationFailed| OpenError::Authentication)
    }

    /// Nonce = salt || IV; AAD = SPI || [seq high] || seq low (RFC 4106 section 5).
    fn nonce_and_aad(&self, head: &[u8], seq_high: Option<u32>) -> ([u8; 12], [u8; 12]) {
        let mut nonce = [0u8; 12];
        nonce[..SALT_LEN].copy_from_slice(&self.salt);
        if let Some(iv) = head.get(HEADER_LEN..PAYLOAD_OFFSET) {
            nonce[SALT_LEN..].copy_from_slice(iv);
        }
        let mut aad = [0u8; 12];
        if let (Some(spi), Some(seq_low)) = (head.get(0..4), head.get(4..8)) {
            aad[..4].copy_from_slice(spi);
            match seq_high {
                Some(high) => {
                    aad[4..8].copy_from_slice(&high.to_be_bytes());
                    aad[8..12].copy_from_slice(seq_low);
                }
                None => aad[4..8].copy_from_slice(seq_low),
            }
        }
        (nonce, aad)
    }
}

/// Why an envelope could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// Too short to hold header, IV, trailer and ICV.
    Truncated,
    /// The ICV did not verify.
    Authentication,
}

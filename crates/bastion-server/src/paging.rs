//! Paging tokens for search results: opaque to clients, and bound to the query and the
//! caller by an HMAC under a key kept in the data directory. A token changed by hand, moved
//! to another query, or presented by another caller is refused; it carries no data of its
//! own beyond the offset, so it reveals nothing either.

use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

pub struct PageSigner {
    key: [u8; 32],
}

impl PageSigner {
    /// Reads `page-signing.key` from `dir`, creating it (owner-only) on first start.
    pub fn load_or_create(dir: &Path) -> std::io::Result<PageSigner> {
        let path = dir.join("page-signing.key");
        if let Ok(bytes) = std::fs::read(&path)
            && let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice())
        {
            return Ok(PageSigner { key });
        }
        std::fs::create_dir_all(dir)?;
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| std::io::Error::other(e.to_string()))?;
        write_private(&path, &key)?;
        Ok(PageSigner { key })
    }

    fn mac(&self, caller: &str, query: &str, offset: usize) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        for part in [caller, "\n", query, "\n", &offset.to_string()] {
            mac.update(part.as_bytes());
        }
        mac
    }

    /// The token for the page at `offset` of `query` (canonical form) for `caller`.
    pub fn token(&self, caller: &str, query: &str, offset: usize) -> String {
        format!("{offset}.{}", hex::encode(self.mac(caller, query, offset).finalize().into_bytes()))
    }

    /// The offset a token stands for, if it was issued for this query and caller.
    pub fn verify(&self, caller: &str, query: &str, token: &str) -> Option<usize> {
        let (offset, sig) = token.split_once('.')?;
        let offset: usize = offset.parse().ok()?;
        let sig = hex::decode(sig).ok()?;
        // verify_slice compares in constant time.
        self.mac(caller, query, offset).verify_slice(&sig).ok()?;
        Some(offset)
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(bytes)
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> PageSigner {
        PageSigner { key: [7; 32] }
    }

    #[test]
    fn accepts_its_own_token() {
        let t = signer().token("anonymous", "Patient?gender=male", 50);
        assert_eq!(signer().verify("anonymous", "Patient?gender=male", &t), Some(50));
    }

    #[test]
    fn rejects_tampered_offset_other_query_other_caller_and_garbage() {
        let s = signer();
        let t = s.token("alice", "Patient?gender=male", 50);
        let (_, sig) = t.split_once('.').unwrap();
        assert_eq!(s.verify("alice", "Patient?gender=male", &format!("100.{sig}")), None);
        assert_eq!(s.verify("alice", "Patient?gender=female", &t), None);
        assert_eq!(s.verify("bob", "Patient?gender=male", &t), None);
        assert_eq!(s.verify("alice", "Patient?gender=male", "garbage"), None);
        assert_eq!(s.verify("alice", "Patient?gender=male", "50.zz"), None);
        let other = PageSigner { key: [8; 32] };
        assert_eq!(other.verify("alice", "Patient?gender=male", &t), None);
    }
}

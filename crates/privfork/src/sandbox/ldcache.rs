//! glibc's `/etc/ld.so.cache` (format `glibc-ld.so.cache1.1`, written by
//! `ldconfig` since glibc 2.32 without the old `ld.so-1.7.0` part): which
//! file the loader takes for a library name.
//!
//! Written here rather than taken from a crate: the two on crates.io
//! (`ld-so-cache`, `ldcache_rs`) are single releases, one pulls `clap` and
//! `serde_json` into a library, and neither chooses among `glibc-hwcaps`
//! entries as the loader does; the format is one header, one table of
//! fixed-size entries and a string area, about a hundred lines to read
//! with every offset checked.

/// The cache's magic and version.
const MAGIC: &[u8; 20] = b"glibc-ld.so.cache1.1";
/// The header: magic and version, nlibs, len_strings, flags, padding,
/// extension_offset, unused[3].
const HEADER: usize = 48;
/// One entry: flags, key, value, osversion, hwcap.
const ENTRY: usize = 24;
/// `FLAG_ELF_LIBC6 | FLAG_X8664_LIB64`: the only flags an x86_64 loader
/// accepts (`_dl_cache_check_flags`).
const FLAGS_X86_64: i32 = 0x0303;
/// `DL_CACHE_HWCAP_EXTENSION`: the entry is in a `glibc-hwcaps`
/// subdirectory whose index is in the low 32 bits of `hwcap`.
const HWCAP_EXTENSION: u64 = 1 << 62;
/// `cache_extension_magic` and the tag of the hwcaps section.
const EXTENSION_MAGIC: u32 = 0xeaa4_2174;
const TAG_GLIBC_HWCAPS: u32 = 1;
/// The largest cache read (this machine's is 33 KiB).
pub(crate) const MAX_SIZE: u64 = 16 << 20;

/// Why the cache could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum LdCacheError {
    /// Not a `glibc-ld.so.cache1.1` file (or the old format).
    #[error("not a glibc-ld.so.cache1.1 file")]
    Format,
    /// An offset or count points outside the file.
    #[error("malformed ld.so.cache: {0}")]
    Malformed(&'static str),
}

/// A parsed cache: the entries an x86_64 loader would consider.
#[derive(Debug, Default)]
pub struct LdCache {
    entries: Vec<Entry>,
}

/// One entry for x86_64.
#[derive(Debug)]
struct Entry {
    /// The library name (`DT_SONAME`).
    name: Vec<u8>,
    /// The file.
    path: Vec<u8>,
    /// The `glibc-hwcaps` subdirectory it is in, if any.
    hwcaps: Option<Vec<u8>>,
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(off..off.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// The NUL-terminated string at `off`.
fn str_at(b: &[u8], off: u32) -> Option<&[u8]> {
    let rest = b.get(usize::try_from(off).ok()?..)?;
    let nul = rest.iter().position(|&c| c == 0)?;
    Some(&rest[..nul])
}

impl LdCache {
    /// Parses a cache file's bytes.
    ///
    /// # Errors
    ///
    /// [`LdCacheError`] if the magic is not the new format's or anything
    /// points outside the bytes.
    pub fn parse(b: &[u8]) -> Result<Self, LdCacheError> {
        if b.len() < HEADER || &b[..20] != MAGIC {
            return Err(LdCacheError::Format);
        }
        let bad = LdCacheError::Malformed;
        let nlibs = u32_at(b, 20).ok_or(bad("header"))? as usize;
        // flags byte: 2 = little-endian (0 = unset, taken as native).
        if !matches!(b[28], 0 | 2) {
            return Err(LdCacheError::Format);
        }
        let ext = u32_at(b, 32).ok_or(bad("header"))?;
        let table_end = nlibs
            .checked_mul(ENTRY)
            .and_then(|n| n.checked_add(HEADER))
            .filter(|&end| end <= b.len())
            .ok_or(bad("entry count"))?;
        let hwcaps = if ext != 0 {
            Self::hwcaps_names(b, ext as usize)?
        } else {
            Vec::new()
        };
        let mut entries = Vec::new();
        for e in b[HEADER..table_end].chunks_exact(ENTRY) {
            let flags = u32_at(e, 0).ok_or(bad("entry"))? as i32;
            if flags != FLAGS_X86_64 {
                continue;
            }
            let key = str_at(b, u32_at(e, 4).ok_or(bad("entry"))?).ok_or(bad("key"))?;
            let value = str_at(b, u32_at(e, 8).ok_or(bad("entry"))?).ok_or(bad("value"))?;
            let hwcap = u64_at(e, 16).ok_or(bad("entry"))?;
            let sub = if hwcap >> 32 == HWCAP_EXTENSION >> 32 {
                let i = hwcap as u32 as usize;
                Some(hwcaps.get(i).ok_or(bad("hwcaps index"))?.clone())
            } else if hwcap != 0 {
                // Legacy hwcap bits (tls, x86_64 subdirectories): ldconfig
                // no longer writes them for x86_64; skipped.
                continue;
            } else {
                None
            };
            entries.push(Entry {
                name: key.to_vec(),
                path: value.to_vec(),
                hwcaps: sub,
            });
        }
        Ok(Self { entries })
    }

    /// The names of the `glibc-hwcaps` subdirectories, by index.
    fn hwcaps_names(b: &[u8], ext: usize) -> Result<Vec<Vec<u8>>, LdCacheError> {
        let bad = LdCacheError::Malformed;
        if u32_at(b, ext) != Some(EXTENSION_MAGIC) {
            return Err(bad("extension magic"));
        }
        let count = u32_at(b, ext + 4).ok_or(bad("extension"))? as usize;
        let mut names = Vec::new();
        for i in 0..count.min(64) {
            let s = ext + 8 + 16 * i;
            if u32_at(b, s).ok_or(bad("extension section"))? != TAG_GLIBC_HWCAPS {
                continue;
            }
            let off = u32_at(b, s + 8).ok_or(bad("extension section"))? as usize;
            let size = u32_at(b, s + 12).ok_or(bad("extension section"))? as usize;
            if !size.is_multiple_of(4) || off.checked_add(size).is_none_or(|end| end > b.len()) {
                return Err(bad("hwcaps section"));
            }
            for j in 0..size / 4 {
                let name = str_at(b, u32_at(b, off + 4 * j).ok_or(bad("hwcaps"))?);
                names.push(name.ok_or(bad("hwcaps name"))?.to_vec());
            }
        }
        Ok(names)
    }

    /// The path the loader takes for `name`: the entry in the
    /// highest-priority `glibc-hwcaps` subdirectory of `hwcaps` (best
    /// first), else the first plain entry.
    pub fn lookup(&self, name: &[u8], hwcaps: &[&str]) -> Option<&[u8]> {
        let mut best: Option<(usize, &[u8])> = None;
        for e in &self.entries {
            if e.name.as_slice() != name {
                continue;
            }
            let prio = match &e.hwcaps {
                Some(s) => match hwcaps.iter().position(|h| h.as_bytes() == s.as_slice()) {
                    Some(p) => p,
                    None => continue,
                },
                None => hwcaps.len(),
            };
            if best.is_none_or(|(p, _)| prio < p) {
                best = Some((prio, &e.path));
            }
        }
        best.map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache of `(name, path, flags, hwcap)` entries and hwcaps names.
    fn build(entries: &[(&str, &str, i32, u64)], hwcaps: &[&str]) -> Vec<u8> {
        let mut strings = Vec::new();
        let base = HEADER + ENTRY * entries.len();
        let mut add = |s: &str| {
            let off = (base + strings.len()) as u32;
            strings.extend_from_slice(s.as_bytes());
            strings.push(0);
            off
        };
        let mut table = Vec::new();
        for (k, v, f, h) in entries {
            let (k, v) = (add(k), add(v));
            table.extend_from_slice(&f.to_le_bytes());
            table.extend_from_slice(&k.to_le_bytes());
            table.extend_from_slice(&v.to_le_bytes());
            table.extend_from_slice(&0u32.to_le_bytes());
            table.extend_from_slice(&h.to_le_bytes());
        }
        let names: Vec<u32> = hwcaps.iter().map(|h| add(h)).collect();
        while !(base + strings.len()).is_multiple_of(4) {
            strings.push(0);
        }
        let ext = base + strings.len();
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        b.extend_from_slice(&(strings.len() as u32).to_le_bytes());
        b.extend_from_slice(&[2, 0, 0, 0]);
        b.extend_from_slice(&(if hwcaps.is_empty() { 0 } else { ext as u32 }).to_le_bytes());
        b.extend_from_slice(&[0; 12]);
        b.extend_from_slice(&table);
        b.extend_from_slice(&strings);
        if !hwcaps.is_empty() {
            let arr = ext + 8 + 16;
            b.extend_from_slice(&EXTENSION_MAGIC.to_le_bytes());
            b.extend_from_slice(&1u32.to_le_bytes());
            for v in [TAG_GLIBC_HWCAPS, 0, arr as u32, 4 * names.len() as u32] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            for n in names {
                b.extend_from_slice(&n.to_le_bytes());
            }
        }
        b
    }

    #[test]
    fn lookup_follows_flags_and_hwcaps() {
        let c = LdCache::parse(&build(
            &[
                ("liba.so.1", "/lib32/liba.so.1", 0x0803, 0),
                ("liba.so.1", "/lib/liba.so.1", FLAGS_X86_64, 0),
                (
                    "liba.so.1",
                    "/lib/glibc-hwcaps/x86-64-v3/liba.so.1",
                    FLAGS_X86_64,
                    HWCAP_EXTENSION,
                ),
                (
                    "liba.so.1",
                    "/lib/glibc-hwcaps/x86-64-v2/liba.so.1",
                    FLAGS_X86_64,
                    HWCAP_EXTENSION | 1,
                ),
            ],
            &["x86-64-v3", "x86-64-v2"],
        ))
        .unwrap();
        assert_eq!(c.lookup(b"liba.so.1", &[]), Some(&b"/lib/liba.so.1"[..]));
        assert_eq!(
            c.lookup(b"liba.so.1", &["x86-64-v2"]),
            Some(&b"/lib/glibc-hwcaps/x86-64-v2/liba.so.1"[..])
        );
        assert_eq!(
            c.lookup(b"liba.so.1", &["x86-64-v3", "x86-64-v2"]),
            Some(&b"/lib/glibc-hwcaps/x86-64-v3/liba.so.1"[..])
        );
        assert_eq!(c.lookup(b"libb.so", &[]), None);
    }

    #[test]
    fn the_system_cache_has_libc() {
        let b = std::fs::read("/etc/ld.so.cache").unwrap();
        let c = LdCache::parse(&b).unwrap();
        let p = c.lookup(b"libc.so.6", &[]).unwrap();
        assert!(p.ends_with(b"/libc.so.6"), "{}", String::from_utf8_lossy(p));
    }

    #[test]
    fn hostile_caches_are_errors() {
        let good = build(
            &[("liba.so", "/lib/liba.so", FLAGS_X86_64, HWCAP_EXTENSION)],
            &["v"],
        );
        for n in 0..good.len() {
            let _ = LdCache::parse(&good[..n]);
        }
        for i in 0..good.len() {
            for v in [0u8, 0xff, 0x7f] {
                let mut b = good.clone();
                b[i] = v;
                let _ = LdCache::parse(&b);
            }
        }
        let mut b = good.clone();
        b[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            LdCache::parse(&b).unwrap_err(),
            LdCacheError::Malformed("entry count")
        );
        assert_eq!(
            LdCache::parse(b"ld.so-1.7.0").unwrap_err(),
            LdCacheError::Format
        );
    }
}

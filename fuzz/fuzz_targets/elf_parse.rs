//! Feeds arbitrary bytes to the ELF reader `privfork run` uses on the
//! program and its libraries, and to the ld.so.cache parser: they must
//! never panic, and never allocate more than their fixed maxima.
#![no_main]

use libfuzzer_sys::fuzz_target;
use privfork::sandbox::{elf, ldcache::LdCache};

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = elf::parse(data) {
        // Whatever parsed is bounded by the input.
        assert!(e.needed.len() <= data.len());
    }
    if let Ok(c) = LdCache::parse(data) {
        let _ = c.lookup(b"libc.so.6", &["x86-64-v3", "x86-64-v2"]);
    }
});

//! What the dynamic loader reads from an ELF file before the program runs:
//! its interpreter (`PT_INTERP`), whether it wants an executable stack
//! (`PT_GNU_STACK`), and its dynamic section's `DT_NEEDED`, `DT_RPATH`,
//! `DT_RUNPATH`, `DT_SONAME` and `DF_1_NODEFLIB`.
//!
//! The layouts and constants come from the `object` crate (`object::elf`);
//! the reading is done here, because `object`'s parsers want the whole
//! file as a byte slice (or read and cache whatever sizes a header claims),
//! and privfork, still root, parses files an unprivileged user may have
//! written. So every read is positional, checked against the file's length
//! and against a fixed maximum before anything is allocated: a hostile file
//! gets an error, never a panic, a hang or a large allocation. Only the ELF
//! privfork can run is accepted: 64-bit little-endian x86_64 (the seccomp
//! filter kills every other architecture's system calls).

use std::io;

use object::LittleEndian as LE;
use object::elf;
use object::pod;

/// The most program headers read (real programs have about a dozen).
const MAX_PHNUM: usize = 4096;
/// The most bytes of a dynamic section read (real ones have ~50 entries).
const MAX_DYNAMIC: u64 = 64 << 10;
/// The longest string read (PATH_MAX).
const MAX_STRING: u64 = 4096;
/// The most `DT_NEEDED` entries accepted from one object.
const MAX_NEEDED: usize = 1024;

/// Where ELF bytes come from: a file or, for tests and fuzzing, a slice.
pub trait Source {
    /// The length in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Fills `buf` from `offset`; an error if the source ends first.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

impl Source for std::fs::File {
    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
}

impl Source for [u8] {
    fn size(&self) -> io::Result<u64> {
        Ok(<[u8]>::len(self) as u64)
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let end = start
            .checked_add(buf.len())
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        let src = self.get(start..end).ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// Why an ELF file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ElfError {
    /// Not an ELF file at all (no `\x7fELF`).
    #[error("not an ELF file")]
    NotElf,
    /// ELF, but not 64-bit little-endian x86_64 for Linux.
    #[error("not an x86_64 ELF file ({0})")]
    Foreign(&'static str),
    /// A header or table is out of bounds, too large or inconsistent.
    #[error("malformed ELF file: {0}")]
    Malformed(&'static str),
    /// Reading failed.
    #[error("cannot read: {0}")]
    Io(#[from] io::Error),
}

/// Whether the stack may be executable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    /// `PT_GNU_STACK` without `PF_X`.
    NotExecutable,
    /// `PT_GNU_STACK` with `PF_X`.
    Executable,
    /// No `PT_GNU_STACK`: glibc's loader then takes the stack to be
    /// executable (`DEFAULT_STACK_PERMS` includes `PF_X` on x86_64).
    Missing,
}

impl Stack {
    /// Whether the loader (or the kernel) makes the stack, or thread
    /// stacks, executable for this object.
    pub fn wants_exec(self) -> bool {
        self != Stack::NotExecutable
    }
}

/// What the loader needs to know about one ELF object.
#[derive(Debug, Clone, Default)]
pub struct Elf {
    /// `e_type` is `ET_DYN` (a shared object or a PIE).
    pub is_dyn: bool,
    /// The `PT_INTERP` path, without its NUL.
    pub interp: Option<Vec<u8>>,
    /// `PT_GNU_STACK`'s verdict.
    pub stack: Option<Stack>,
    /// `DT_NEEDED` names, in order.
    pub needed: Vec<Vec<u8>>,
    /// `DT_RPATH`, unless `DT_RUNPATH` is present (glibc then ignores it).
    pub rpath: Option<Vec<u8>>,
    /// `DT_RUNPATH`.
    pub runpath: Option<Vec<u8>>,
    /// `DT_SONAME`.
    pub soname: Option<Vec<u8>>,
    /// `DF_1_NODEFLIB` in `DT_FLAGS_1`: no ld.so.cache, no default dirs.
    pub nodeflib: bool,
}

/// Reads `len` bytes at `offset`, both checked against the source's
/// length and `max` before allocating.
fn read(
    src: &(impl Source + ?Sized),
    size: u64,
    offset: u64,
    len: u64,
    max: u64,
    what: &'static str,
) -> Result<Vec<u8>, ElfError> {
    let end = offset.checked_add(len).ok_or(ElfError::Malformed(what))?;
    if len > max || end > size {
        return Err(ElfError::Malformed(what));
    }
    let mut buf = vec![0; usize::try_from(len).map_err(|_| ElfError::Malformed(what))?];
    src.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}

/// Checks the identification and machine of an ELF header (the first 64
/// bytes): what glibc's `open_verify` checks before it accepts a
/// candidate library.
///
/// # Errors
///
/// [`ElfError::NotElf`] or [`ElfError::Foreign`] naming what differs.
pub fn check_header(head: &[u8]) -> Result<&elf::FileHeader64<LE>, ElfError> {
    let (h, _) = pod::from_bytes::<elf::FileHeader64<LE>>(head).map_err(|()| ElfError::NotElf)?;
    let id = &h.e_ident;
    if id.magic != elf::ELFMAG {
        return Err(ElfError::NotElf);
    }
    if id.class != elf::ELFCLASS64 {
        return Err(ElfError::Foreign("not 64-bit"));
    }
    if id.data != elf::ELFDATA2LSB {
        return Err(ElfError::Foreign("not little-endian"));
    }
    if id.version != elf::EV_CURRENT {
        return Err(ElfError::Foreign("unknown ELF version"));
    }
    if id.os_abi != elf::ELFOSABI_NONE && id.os_abi != elf::ELFOSABI_GNU {
        return Err(ElfError::Foreign("not a System V or GNU/Linux ABI"));
    }
    if h.e_machine.get(LE) != elf::EM_X86_64 {
        return Err(ElfError::Foreign("not x86_64"));
    }
    Ok(h)
}

/// Parses what the loader needs from `src`.
///
/// # Errors
///
/// [`ElfError`]: not ELF, not x86_64, malformed (out-of-bounds or too
/// large tables, a string without its NUL, an address outside every
/// loaded segment), or a read failure.
pub fn parse(src: &(impl Source + ?Sized)) -> Result<Elf, ElfError> {
    let size = src.size()?;
    let head = read(src, size, 0, 64, 64, "ELF header").map_err(|e| match e {
        ElfError::Malformed(_) => ElfError::NotElf,
        e => e,
    })?;
    let h = check_header(&head)?;
    let e_type = h.e_type.get(LE);
    if e_type != elf::ET_EXEC && e_type != elf::ET_DYN {
        return Err(ElfError::Foreign(
            "neither an executable nor a shared object",
        ));
    }
    let phnum = usize::from(h.e_phnum.get(LE));
    if phnum == usize::from(elf::PN_XNUM) || phnum > MAX_PHNUM {
        return Err(ElfError::Malformed("too many program headers"));
    }
    let phentsize = std::mem::size_of::<elf::ProgramHeader64<LE>>();
    if phnum > 0 && usize::from(h.e_phentsize.get(LE)) != phentsize {
        return Err(ElfError::Malformed("program header size"));
    }
    let table = read(
        src,
        size,
        h.e_phoff.get(LE),
        (phnum * phentsize) as u64,
        (MAX_PHNUM * phentsize) as u64,
        "program header table",
    )?;
    let phdrs = pod::slice_from_all_bytes::<elf::ProgramHeader64<LE>>(&table)
        .map_err(|()| ElfError::Malformed("program header table"))?;
    let mut out = Elf {
        is_dyn: e_type == elf::ET_DYN,
        ..Elf::default()
    };
    let mut dynamic = None;
    for ph in phdrs {
        let p_type = ph.p_type.get(LE);
        if p_type == elf::PT_INTERP {
            if out.interp.is_some() {
                return Err(ElfError::Malformed("two PT_INTERP"));
            }
            let mut s = read(
                src,
                size,
                ph.p_offset.get(LE),
                ph.p_filesz.get(LE),
                MAX_STRING,
                "PT_INTERP",
            )?;
            // The kernel requires the NUL at the end.
            if s.pop() != Some(0) || s.is_empty() || s.contains(&0) {
                return Err(ElfError::Malformed("PT_INTERP is not a string"));
            }
            out.interp = Some(s);
        } else if p_type == elf::PT_GNU_STACK {
            // The kernel and glibc take the last one; so do we.
            out.stack = Some(if ph.p_flags.get(LE).0 & elf::PF_X.0 != 0 {
                Stack::Executable
            } else {
                Stack::NotExecutable
            });
        } else if p_type == elf::PT_DYNAMIC {
            dynamic = Some(ph);
        }
    }
    if out.stack.is_none() {
        out.stack = Some(Stack::Missing);
    }
    if let Some(ph) = dynamic {
        read_dynamic(src, size, phdrs, ph, &mut out)?;
    }
    Ok(out)
}

/// The file offset of virtual address `addr`, through the `PT_LOAD`
/// segment that holds it (the loader reads `DT_STRTAB` from memory).
fn file_offset(phdrs: &[elf::ProgramHeader64<LE>], addr: u64) -> Option<u64> {
    phdrs.iter().find_map(|ph| {
        if ph.p_type.get(LE) != elf::PT_LOAD {
            return None;
        }
        let start = ph.p_vaddr.get(LE);
        let delta = addr.checked_sub(start)?;
        (delta < ph.p_filesz.get(LE)).then(|| ph.p_offset.get(LE).checked_add(delta))?
    })
}

fn read_dynamic(
    src: &(impl Source + ?Sized),
    size: u64,
    phdrs: &[elf::ProgramHeader64<LE>],
    ph: &elf::ProgramHeader64<LE>,
    out: &mut Elf,
) -> Result<(), ElfError> {
    let entsize = std::mem::size_of::<elf::Dyn64<LE>>() as u64;
    // A trailing partial entry is ignored, as the loader ignores it.
    let len = ph.p_filesz.get(LE) / entsize * entsize;
    let bytes = read(
        src,
        size,
        ph.p_offset.get(LE),
        len,
        MAX_DYNAMIC,
        "dynamic section",
    )?;
    let entries = pod::slice_from_all_bytes::<elf::Dyn64<LE>>(&bytes)
        .map_err(|()| ElfError::Malformed("dynamic section"))?;
    let (mut strtab, mut strsz) = (None, None);
    let (mut needed, mut rpath, mut runpath, mut soname) = (Vec::new(), None, None, None);
    for d in entries {
        let tag = d.d_tag.get(LE);
        let val = d.d_val.get(LE);
        if tag == elf::DT_NULL {
            break;
        } else if tag == elf::DT_STRTAB {
            strtab = Some(val);
        } else if tag == elf::DT_STRSZ {
            strsz = Some(val);
        } else if tag == elf::DT_NEEDED {
            if needed.len() == MAX_NEEDED {
                return Err(ElfError::Malformed("too many DT_NEEDED entries"));
            }
            needed.push(val);
        } else if tag == elf::DT_RPATH {
            rpath = Some(val);
        } else if tag == elf::DT_RUNPATH {
            runpath = Some(val);
        } else if tag == elf::DT_SONAME {
            soname = Some(val);
        } else if tag == elf::DT_FLAGS_1 {
            out.nodeflib = val & elf::DF_1_NODEFLIB.0 != 0;
        }
    }
    let any = !needed.is_empty() || rpath.is_some() || runpath.is_some() || soname.is_some();
    if !any {
        return Ok(());
    }
    let (Some(strtab), Some(strsz)) = (strtab, strsz) else {
        return Err(ElfError::Malformed("strings without DT_STRTAB/DT_STRSZ"));
    };
    let base = file_offset(phdrs, strtab).ok_or(ElfError::Malformed("DT_STRTAB not loaded"))?;
    let string = |off: u64| -> Result<Vec<u8>, ElfError> {
        if off >= strsz {
            return Err(ElfError::Malformed("string offset beyond DT_STRSZ"));
        }
        let start = base
            .checked_add(off)
            .ok_or(ElfError::Malformed("string offset"))?;
        // At most MAX_STRING bytes, within the table and the file.
        let avail = (strsz - off)
            .min(MAX_STRING)
            .min(size.saturating_sub(start));
        let mut s = read(src, size, start, avail, MAX_STRING, "string")?;
        let nul = s
            .iter()
            .position(|&b| b == 0)
            .ok_or(ElfError::Malformed("string without NUL"))?;
        s.truncate(nul);
        Ok(s)
    };
    for off in needed {
        let name = string(off)?;
        if name.is_empty() {
            return Err(ElfError::Malformed("empty DT_NEEDED"));
        }
        out.needed.push(name);
    }
    out.runpath = runpath.map(&string).transpose()?;
    // glibc: "If both RPATH and RUNPATH are given, the latter is used."
    if out.runpath.is_none() {
        out.rpath = rpath.map(&string).transpose()?;
    }
    out.soname = soname.map(&string).transpose()?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal x86_64 ELF: header, `phdrs` program headers, then `tail`
    /// bytes; program header offsets are the caller's.
    pub(crate) fn build(e_type: u16, phdrs: &[[u64; 7]], tail: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; 64];
        v[..4].copy_from_slice(&elf::ELFMAG);
        v[4] = 2; // 64-bit
        v[5] = 1; // little-endian
        v[6] = 1; // EV_CURRENT
        v[16..18].copy_from_slice(&e_type.to_le_bytes());
        v[18..20].copy_from_slice(&62u16.to_le_bytes());
        v[20..24].copy_from_slice(&1u32.to_le_bytes());
        v[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        v[52..54].copy_from_slice(&64u16.to_le_bytes());
        v[54..56].copy_from_slice(&56u16.to_le_bytes());
        v[56..58].copy_from_slice(&(phdrs.len() as u16).to_le_bytes());
        for p in phdrs {
            // type|flags, offset, vaddr, paddr, filesz, memsz, align
            v.extend_from_slice(&(p[0] as u32).to_le_bytes());
            v.extend_from_slice(&((p[0] >> 32) as u32).to_le_bytes());
            for f in &p[1..] {
                v.extend_from_slice(&f.to_le_bytes());
            }
        }
        v.extend_from_slice(tail);
        v
    }

    /// An object with a dynamic section naming `needed` and `runpath`.
    pub(crate) fn with_dynamic(needed: &[&str], runpath: Option<&str>, stack_x: bool) -> Vec<u8> {
        let start = 64 + 3 * 56;
        let mut strs = vec![0u8];
        let mut dyns: Vec<(i64, u64)> = Vec::new();
        for n in needed {
            dyns.push((1, strs.len() as u64));
            strs.extend_from_slice(n.as_bytes());
            strs.push(0);
        }
        if let Some(r) = runpath {
            dyns.push((29, strs.len() as u64));
            strs.extend_from_slice(r.as_bytes());
            strs.push(0);
        }
        let dyn_off = start as u64 + strs.len() as u64;
        dyns.push((5, start as u64)); // DT_STRTAB: vaddr == offset
        dyns.push((10, strs.len() as u64));
        dyns.push((0, 0));
        let mut tail = strs.clone();
        for (t, v) in &dyns {
            tail.extend_from_slice(&t.to_le_bytes());
            tail.extend_from_slice(&v.to_le_bytes());
        }
        let total = start as u64 + tail.len() as u64;
        let flags = if stack_x { 7u64 } else { 6 };
        build(
            3,
            &[
                [1 | (5 << 32), 0, 0, 0, total, total, 0x1000],
                [
                    2 | (6 << 32),
                    dyn_off,
                    dyn_off,
                    0,
                    16 * dyns.len() as u64,
                    0,
                    8,
                ],
                [0x6474_e551 | (flags << 32), 0, 0, 0, 0, 0, 16],
            ],
            &tail,
        )
    }

    #[test]
    fn reads_needed_runpath_and_stack() {
        let b = with_dynamic(&["liba.so.1", "libb.so"], Some("$ORIGIN/lib"), false);
        let e = parse(&b[..]).unwrap();
        assert!(e.is_dyn);
        assert_eq!(e.needed, [b"liba.so.1".to_vec(), b"libb.so".to_vec()]);
        assert_eq!(e.runpath.as_deref(), Some(&b"$ORIGIN/lib"[..]));
        assert_eq!(e.stack, Some(Stack::NotExecutable));
        let e = parse(&with_dynamic(&[], None, true)[..]).unwrap();
        assert_eq!(e.stack, Some(Stack::Executable));
    }

    #[test]
    fn real_programs_parse() {
        let ls = parse(&std::fs::File::open("/bin/ls").unwrap()).unwrap();
        assert_eq!(
            ls.interp.as_deref(),
            Some(&b"/lib64/ld-linux-x86-64.so.2"[..])
        );
        assert!(ls.needed.contains(&b"libc.so.6".to_vec()));
        assert_eq!(ls.stack, Some(Stack::NotExecutable));
        let ldconfig = parse(&std::fs::File::open("/usr/sbin/ldconfig").unwrap()).unwrap();
        assert!(ldconfig.interp.is_none() && ldconfig.needed.is_empty());
    }

    #[test]
    fn hostile_inputs_are_errors() {
        let good = with_dynamic(&["liba.so"], Some("/x"), false);
        // Every truncation: an error or a (shorter) parse, never a panic.
        for n in 0..good.len() {
            let _ = parse(&good[..n]);
        }
        assert!(matches!(parse(&b"#!/bin/sh\n"[..]), Err(ElfError::NotElf)));
        assert!(matches!(parse(&good[..40]), Err(ElfError::NotElf)));
        // Huge counts and sizes: refused before any allocation.
        let mut b = good.clone();
        b[56..58].copy_from_slice(&0xfffeu16.to_le_bytes());
        assert!(matches!(parse(&b[..]), Err(ElfError::Malformed(_))));
        let mut b = good.clone();
        b[56..58].copy_from_slice(&0xffffu16.to_le_bytes());
        assert!(matches!(parse(&b[..]), Err(ElfError::Malformed(_))));
        let mut b = good.clone();
        // The dynamic segment's p_filesz (second header, at 64+56+32).
        b[64 + 56 + 32..64 + 56 + 40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(parse(&b[..]), Err(ElfError::Malformed(_))));
        let mut b = good.clone();
        b[64 + 56 + 8..64 + 56 + 16].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
        assert!(matches!(parse(&b[..]), Err(ElfError::Malformed(_))));
        // Foreign machine and class.
        let mut b = good.clone();
        b[18] = 3;
        assert!(matches!(parse(&b[..]), Err(ElfError::Foreign(_))));
        let mut b = good;
        b[4] = 1;
        assert!(matches!(parse(&b[..]), Err(ElfError::Foreign(_))));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap stand-in for the fuzz target: flip every byte of a valid
        // object in turn.
        let good = with_dynamic(&["liba.so", "libb.so"], Some("$ORIGIN"), false);
        for i in 0..good.len() {
            for v in [0u8, 0xff, 0x80, 1] {
                let mut b = good.clone();
                b[i] = v;
                let _ = parse(&b[..]);
            }
        }
    }
}

//! The files glibc's dynamic loader (2.36, x86_64) opens to start a
//! program, found as it finds them and without running anything: the
//! program's interpreter (`PT_INTERP`) and every library in the closure of
//! its `DT_NEEDED` entries.
//!
//! Each needed name is looked up as `_dl_map_object` does:
//!
//! 1. a name with a `/` is a path (`$ORIGIN` & co. expanded);
//! 2. an object already loaded under that name or `DT_SONAME` is reused;
//! 3. `DT_RPATH` of the needing object and of the chain of objects that
//!    loaded it, then of the program — only if the needing object has no
//!    `DT_RUNPATH` (an object with both has its `DT_RPATH` ignored);
//! 4. `LD_LIBRARY_PATH`: **not** looked at. Should it be set, the loader's
//!    opens there are refused by Landlock (`EACCES`), which glibc treats as
//!    "not here" and goes on to the file resolved here;
//! 5. `DT_RUNPATH` of the needing object;
//! 6. `/etc/ld.so.cache` and the default directories, unless the needing
//!    object has `DF_1_NODEFLIB`.
//!
//! In every directory of 3, 5 and 6 the loader first tries the
//! `glibc-hwcaps/x86-64-v{4,3,2}` subdirectories the CPU supports, then the
//! legacy hwcaps subdirectories (`tls`, `x86_64`), then the directory
//! itself; a file that is not 64-bit x86_64 ELF is passed over. Where this
//! guess and the loader could differ (a legacy `haswell` subdirectory, say)
//! the loader's own choice is not unveiled: it gets `EACCES`, goes on, and
//! loads the file resolved here or fails to start — never more access.
//!
//! `$ORIGIN` is the program's canonical directory (the loader reads
//! `/proc/self/exe`) or a library's directory as found; `$LIB` is
//! `lib/x86_64-linux-gnu` and `$PLATFORM` `x86_64`, as on Debian's x86_64
//! glibc here.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::elf::{self, Elf, ElfError};
use super::ldcache::{self, LdCache};

/// The loader's default directories (Debian's x86_64 glibc: `ld.so --help`).
pub const DEFAULT_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib",
    "/usr/lib",
];
/// The loader's cache.
pub const LD_SO_CACHE: &str = "/etc/ld.so.cache";
/// Legacy hwcaps subdirectories glibc 2.36 tries here (AT_PLATFORM
/// `x86_64`, hwcap `x86_64`, `tls`), in its order.
const LEGACY_SUBDIRS: &[&str] = &[
    "tls/x86_64/x86_64",
    "tls/x86_64",
    "tls",
    "x86_64/x86_64",
    "x86_64",
];
/// The most objects one program may load (a browser loads ~200).
const MAX_OBJECTS: usize = 4096;
/// The most directories taken from one `DT_RPATH`/`DT_RUNPATH`.
const MAX_SEARCH_DIRS: usize = 256;

/// What the loader will open for a program.
#[derive(Debug, Default, Clone)]
pub struct Resolution {
    /// The program is ELF and has an interpreter (is dynamically linked).
    pub dynamic: bool,
    /// The interpreter, canonical.
    pub interpreter: Option<PathBuf>,
    /// The libraries, canonical, in load order, each once.
    pub libraries: Vec<PathBuf>,
    /// The first object (program, interpreter, library) that makes the
    /// stack executable, if any.
    pub exec_stack: Option<PathBuf>,
    /// The program's own `DT_RPATH`/`DT_RUNPATH`/`DT_NEEDED` use
    /// `$ORIGIN`, which the loader expands by `readlink("/proc/self/exe")`
    /// (a library's `$ORIGIN` comes from its path, without a system call).
    pub program_uses_origin: bool,
    /// The interpreter and the libraries as the loader names them (before
    /// symlinks are resolved), in load order: what a caller checks for
    /// directories others can write (see [`crate::trusted_path`]).
    pub found: Vec<PathBuf>,
    /// Every `DT_RPATH`/`DT_RUNPATH` directory searched, each once, sorted.
    pub search_dirs: Vec<PathBuf>,
}

/// Whether `s` names `$ORIGIN` (or `${ORIGIN}`).
fn uses_origin(s: &[u8]) -> bool {
    s.windows(7).any(|w| w == b"$ORIGIN") || s.windows(9).any(|w| w == b"${ORIGIN}")
}

/// Why the loader's files could not be found.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The program, its interpreter or a library cannot be parsed.
    #[error("{}: {source}", path.display())]
    Elf {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: ElfError,
    },
    /// The interpreter cannot be opened.
    #[error("interpreter {} of {}: {source}", path.display(), program.display())]
    Interpreter {
        /// The interpreter.
        path: PathBuf,
        /// The program.
        program: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A needed library is nowhere the loader would look.
    #[error(
        "{}: library {} (needed by {}) not found in its RPATH/RUNPATH, /etc/ld.so.cache or {}",
        program.display(),
        String::from_utf8_lossy(name),
        needed_by.display(),
        DEFAULT_DIRS.join(", ")
    )]
    Missing {
        /// The `DT_NEEDED` name.
        name: Vec<u8>,
        /// The object that needs it.
        needed_by: PathBuf,
        /// The program.
        program: PathBuf,
    },
    /// More objects than any real program loads (a hostile cycle of
    /// distinct names, say).
    #[error("{}: more than {MAX_OBJECTS} libraries", program.display())]
    TooMany {
        /// The program.
        program: PathBuf,
    },
}

/// (st_dev, st_ino).
type FileId = (u64, u64);
/// A library found: its path as found, its ELF, its id.
type Found = (PathBuf, Elf, FileId);

/// One loaded object.
struct Object {
    /// The path it was opened by.
    path: PathBuf,
    /// `$ORIGIN`.
    origin: PathBuf,
    elf: Elf,
    /// The object whose `DT_NEEDED` loaded it.
    loader: Option<usize>,
    /// The names it answers to (requested names, `DT_SONAME`).
    names: Vec<Vec<u8>>,
    /// The same file under two names is loaded once.
    id: FileId,
}

/// The `x86-64-vN` levels this CPU supports, best first (glibc's
/// `glibc-hwcaps` subdirectories; its definitions of each level).
pub fn glibc_hwcaps() -> Vec<&'static str> {
    let mut v = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        let v2 = has!("cmpxchg16b")
            && has!("popcnt")
            && has!("sse3")
            && has!("sse4.1")
            && has!("sse4.2")
            && has!("ssse3");
        let v3 = v2
            && has!("avx")
            && has!("avx2")
            && has!("bmi1")
            && has!("bmi2")
            && has!("f16c")
            && has!("fma")
            && has!("lzcnt")
            && has!("movbe")
            && has!("xsave");
        let v4 = v3
            && has!("avx512f")
            && has!("avx512bw")
            && has!("avx512cd")
            && has!("avx512dq")
            && has!("avx512vl");
        for (ok, name) in [(v4, "x86-64-v4"), (v3, "x86-64-v3"), (v2, "x86-64-v2")] {
            if ok {
                v.push(name);
            }
        }
    }
    v
}

/// Expands `$ORIGIN`, `$LIB`, `$PLATFORM` (also `${...}`) as glibc's
/// `_dl_dst_substitute` does; an unknown `$NAME` stays as it is.
fn expand(s: &[u8], origin: &Path) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'$' {
            let rest = &s[i + 1..];
            let mut hit = None;
            for (name, value) in [
                (&b"ORIGIN"[..], origin.as_os_str().as_bytes()),
                (b"PLATFORM", b"x86_64"),
                (b"LIB", b"lib/x86_64-linux-gnu"),
            ] {
                if rest.starts_with(name)
                    && rest
                        .get(name.len())
                        .is_none_or(|&c| !(c.is_ascii_alphanumeric() || c == b'_'))
                {
                    hit = Some((name.len(), value));
                } else if rest.first() == Some(&b'{')
                    && rest[1..].starts_with(name)
                    && rest.get(1 + name.len()) == Some(&b'}')
                {
                    hit = Some((name.len() + 2, value));
                }
                if hit.is_some() {
                    break;
                }
            }
            if let Some((len, value)) = hit {
                out.extend_from_slice(value);
                i += 1 + len;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// A path from bytes, relative ones against the current directory (the
/// program's, which it inherits from privfork).
fn path_of(bytes: &[u8]) -> PathBuf {
    let p = Path::new(OsStr::from_bytes(bytes));
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    }
}

/// The directories of a `DT_RPATH`/`DT_RUNPATH` string (an empty element
/// is the current directory, as in glibc's `fillin_rpath`).
fn search_dirs(list: &[u8], origin: &Path) -> Vec<PathBuf> {
    list.split(|&c| c == b':')
        .take(MAX_SEARCH_DIRS)
        .map(|d| {
            if d.is_empty() {
                PathBuf::from(".")
            } else {
                path_of(&expand(d, origin))
            }
        })
        .collect()
}

/// Opens and parses a candidate library; `Ok(None)` if glibc would pass
/// it over (missing, unreadable, not a regular file, not x86_64 ELF).
fn candidate(path: &Path) -> Result<Option<(Elf, FileId)>, ResolveError> {
    let Ok(f) = super::run::open_regular(path) else {
        return Ok(None);
    };
    let id = match f.metadata() {
        Ok(m) => (m.dev(), m.ino()),
        Err(_) => return Ok(None),
    };
    match elf::parse(&f) {
        Ok(e) => Ok(Some((e, id))),
        Err(ElfError::NotElf | ElfError::Foreign(_)) => Ok(None),
        Err(source) => Err(ResolveError::Elf {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The directory of `p`, for `$ORIGIN`.
fn dir_of(p: &Path) -> PathBuf {
    p.parent().map(Path::to_path_buf).unwrap_or_default()
}

struct Resolver<'a> {
    program: &'a Path,
    objects: Vec<Object>,
    hwcaps: Vec<&'static str>,
    cache: Option<Option<LdCache>>,
    /// The RPATH/RUNPATH directories searched so far.
    searched: std::collections::BTreeSet<PathBuf>,
}

impl Resolver<'_> {
    /// The first usable file named `name` in `dir` or its hwcaps subdirectories.
    fn in_dir(&self, dir: &Path, name: &[u8]) -> Result<Option<Found>, ResolveError> {
        let name = OsStr::from_bytes(name);
        let hw = self.hwcaps.iter().map(|h| format!("glibc-hwcaps/{h}"));
        let subs = hw.chain(LEGACY_SUBDIRS.iter().map(|s| (*s).to_owned()));
        for sub in subs.map(Some).chain([None]) {
            let p = match sub {
                Some(s) => dir.join(s).join(name),
                None => dir.join(name),
            };
            if let Some((e, id)) = candidate(&p)? {
                return Ok(Some((p, e, id)));
            }
        }
        Ok(None)
    }

    fn cache(&mut self) -> Option<&LdCache> {
        self.cache
            .get_or_insert_with(|| {
                use std::io::Read;
                let f = super::run::open_regular(Path::new(LD_SO_CACHE)).ok()?;
                let mut b = Vec::new();
                f.take(ldcache::MAX_SIZE).read_to_end(&mut b).ok()?;
                // A cache the loader could not read either: none.
                LdCache::parse(&b).ok()
            })
            .as_ref()
    }

    /// Finds `name` for object `by`, as `_dl_map_object` does.
    fn search(&mut self, name: &[u8], by: usize) -> Result<Option<Found>, ResolveError> {
        let needer = &self.objects[by];
        if name.contains(&b'/') {
            let p = path_of(&expand(name, &needer.origin));
            return Ok(candidate(&p)?.map(|(e, id)| (p, e, id)));
        }
        let mut dirs = Vec::new();
        if needer.elf.runpath.is_none() {
            let mut chain = Some(by);
            let mut main_seen = false;
            while let Some(i) = chain {
                let o = &self.objects[i];
                main_seen |= i == 0;
                if let Some(r) = &o.elf.rpath {
                    dirs.extend(search_dirs(r, &o.origin));
                }
                chain = o.loader;
            }
            if !main_seen && let Some(r) = &self.objects[0].elf.rpath {
                dirs.extend(search_dirs(r, &self.objects[0].origin));
            }
        }
        if let Some(r) = &needer.elf.runpath {
            dirs.extend(search_dirs(r, &needer.origin));
        }
        let nodeflib = needer.elf.nodeflib;
        self.searched.extend(dirs.iter().cloned());
        for d in &dirs {
            if let Some(found) = self.in_dir(d, name)? {
                return Ok(Some(found));
            }
        }
        if nodeflib {
            return Ok(None);
        }
        let hwcaps = self.hwcaps.clone();
        if let Some(p) = self.cache().and_then(|c| c.lookup(name, &hwcaps)) {
            let p = path_of(p);
            if let Some((e, id)) = candidate(&p)? {
                return Ok(Some((p, e, id)));
            }
        }
        for d in DEFAULT_DIRS {
            if let Some(found) = self.in_dir(Path::new(d), name)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }
}

fn canonical(p: &Path) -> Result<PathBuf, ResolveError> {
    p.canonicalize().map_err(|e| ResolveError::Elf {
        path: p.to_path_buf(),
        source: ElfError::Io(e),
    })
}

/// Finds every file the loader opens to start `program` (already found
/// in `PATH`): its interpreter and libraries.
///
/// A file that is not ELF (a script, or anything the kernel will refuse)
/// resolves to nothing. The program is not run.
///
/// # Errors
///
/// [`ResolveError`]: a file cannot be read or parsed, or is foreign (not
/// x86_64), or a needed library is not found (named, with what needs it).
pub fn resolve(program: &Path) -> Result<Resolution, ResolveError> {
    let elf_err = |path: &Path, source| ResolveError::Elf {
        path: path.to_path_buf(),
        source,
    };
    let Ok(f) = super::run::open_regular(program) else {
        return Ok(Resolution::default());
    };
    let main = match elf::parse(&f) {
        Ok(e) => e,
        Err(ElfError::NotElf) => return Ok(Resolution::default()),
        Err(e) => return Err(elf_err(program, e)),
    };
    let meta = f
        .metadata()
        .map_err(|e| elf_err(program, ElfError::Io(e)))?;
    let main_path = canonical(program)?;
    let mut res = Resolution::default();
    if main.stack.is_some_and(elf::Stack::wants_exec) {
        res.exec_stack = Some(main_path.clone());
    }
    let Some(interp) = main.interp.clone() else {
        return Ok(res); // statically linked
    };
    res.dynamic = true;
    res.program_uses_origin = main
        .rpath
        .iter()
        .chain(&main.runpath)
        .chain(&main.needed)
        .any(|s| uses_origin(s));
    let interp = path_of(&interp);
    let fi = super::run::open_regular(&interp).map_err(|source| ResolveError::Interpreter {
        path: interp.clone(),
        program: program.to_path_buf(),
        source,
    })?;
    let ielf = elf::parse(&fi).map_err(|e| elf_err(&interp, e))?;
    let imeta = fi
        .metadata()
        .map_err(|e| elf_err(&interp, ElfError::Io(e)))?;
    let interp_canon = canonical(&interp)?;
    if res.exec_stack.is_none() && ielf.stack.is_some_and(elf::Stack::wants_exec) {
        res.exec_stack = Some(interp_canon.clone());
    }
    res.interpreter = Some(interp_canon);
    res.found.push(interp.clone());
    let mut names = vec![interp.as_os_str().as_bytes().to_vec()];
    names.extend(ielf.soname.clone());
    let mut r = Resolver {
        program,
        objects: vec![
            Object {
                origin: dir_of(&main_path),
                path: main_path,
                elf: main,
                loader: None,
                names: Vec::new(),
                id: (meta.dev(), meta.ino()),
            },
            Object {
                origin: dir_of(&interp),
                path: interp,
                elf: ielf,
                loader: None,
                names,
                id: (imeta.dev(), imeta.ino()),
            },
        ],
        hwcaps: glibc_hwcaps(),
        cache: None,
        searched: Default::default(),
    };
    closure(&mut r, &mut res)?;
    res.search_dirs = r.searched.into_iter().collect();
    Ok(res)
}

/// Loads the `DT_NEEDED` closure of the objects in `r` (breadth first, as
/// `_dl_map_object_deps` does), adding each new library to `res`.
fn closure(r: &mut Resolver<'_>, res: &mut Resolution) -> Result<(), ResolveError> {
    let program = r.program;
    // Breadth first, as _dl_map_object_deps loads them.
    let mut queue: VecDeque<usize> = VecDeque::from([0]);
    while let Some(by) = queue.pop_front() {
        let needed = r.objects[by].elf.needed.clone();
        for name in needed {
            if r.objects.iter().any(|o| o.names.contains(&name)) {
                continue;
            }
            let Some((path, elf, id)) = r.search(&name, by)? else {
                return Err(ResolveError::Missing {
                    name,
                    needed_by: r.objects[by].path.clone(),
                    program: r.program.to_path_buf(),
                });
            };
            if let Some(o) = r.objects.iter_mut().find(|o| o.id == id) {
                o.names.push(name);
                continue;
            }
            if r.objects.len() == MAX_OBJECTS {
                return Err(ResolveError::TooMany {
                    program: program.to_path_buf(),
                });
            }
            let canon = canonical(&path)?;
            if res.exec_stack.is_none() && elf.stack.is_some_and(elf::Stack::wants_exec) {
                res.exec_stack = Some(canon.clone());
            }
            res.libraries.push(canon);
            res.found.push(path.clone());
            let mut names = vec![name];
            names.extend(elf.soname.clone());
            r.objects.push(Object {
                origin: dir_of(&path),
                path,
                elf,
                loader: Some(by),
                names,
                id,
            });
            queue.push_back(r.objects.len() - 1);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsts_expand_as_glibc_does() {
        let o = Path::new("/opt/app/bin");
        assert_eq!(expand(b"$ORIGIN/../lib", o), b"/opt/app/bin/../lib");
        assert_eq!(expand(b"${ORIGIN}x", o), b"/opt/app/binx");
        assert_eq!(
            expand(b"/usr/$LIB/${PLATFORM}", o),
            b"/usr/lib/x86_64-linux-gnu/x86_64"
        );
        // Not a known name: left alone.
        assert_eq!(expand(b"$ORIGINAL/$X", o), b"$ORIGINAL/$X");
        assert_eq!(expand(b"$", o), b"$");
        assert_eq!(expand(b"${ORIGIN", o), b"${ORIGIN");
    }

    #[test]
    fn ls_resolves_to_libc_and_friends_only() {
        let r = resolve(Path::new("/bin/ls")).unwrap();
        assert!(r.dynamic);
        assert_eq!(
            r.interpreter.as_deref(),
            Some(Path::new("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"))
        );
        let names: Vec<_> = r
            .libraries
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().any(|n| n.starts_with("libc.so")), "{names:?}");
        assert!(
            names.iter().any(|n| n.starts_with("libselinux")),
            "{names:?}"
        );
        // ld-linux is the interpreter, reused by its DT_SONAME, not listed again.
        assert!(
            !names.iter().any(|n| n.starts_with("ld-linux")),
            "{names:?}"
        );
        assert!(r.exec_stack.is_none());
    }

    #[test]
    fn static_scripts_and_fifos() {
        let r = resolve(Path::new("/usr/sbin/ldconfig")).unwrap();
        assert!(!r.dynamic && r.libraries.is_empty());
        let r = resolve(Path::new("/etc/hostname")).unwrap();
        assert!(!r.dynamic);
    }

    /// Writes `bytes` as `dir/name`.
    fn put(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn cycles_and_runpath_loops_end() {
        use elf::tests::with_dynamic;
        let dir = std::env::temp_dir().join(format!("privfork-loader-{}", std::process::id()));
        // The "program": no interpreter, so resolve() stops early; drive the
        // resolver directly with an object that needs a cycle.
        let a = put(
            &dir,
            "liba.so",
            &with_dynamic(&["libb.so"], Some("$ORIGIN:$ORIGIN/.:$ORIGIN/../"), false),
        );
        put(
            &dir,
            "libb.so",
            &with_dynamic(&["liba.so", "libb.so"], Some("$ORIGIN"), false),
        );
        let main = elf::parse(&std::fs::File::open(&a).unwrap()).unwrap();
        let mut r = Resolver {
            program: &a,
            objects: vec![Object {
                path: a.clone(),
                origin: dir.clone(),
                elf: main,
                loader: None,
                names: vec![b"liba.so".to_vec()],
                id: {
                    let m = std::fs::metadata(&a).unwrap();
                    (m.dev(), m.ino())
                },
            }],
            hwcaps: glibc_hwcaps(),
            cache: None,
            searched: Default::default(),
        };
        let (p, e, _) = r.search(b"libb.so", 0).unwrap().unwrap();
        assert_eq!(p, dir.join("libb.so"));
        assert_eq!(e.needed.len(), 2);
        assert!(r.search(b"libnosuch-pf.so", 0).unwrap().is_none());
        // The cycle liba -> libb -> liba (and libb -> libb) ends, each once.
        let mut res = Resolution::default();
        closure(&mut r, &mut res).unwrap();
        assert_eq!(res.libraries, [dir.join("libb.so").canonicalize().unwrap()]);
        // A missing library is named with what needs it.
        put(
            &dir,
            "libb.so",
            &with_dynamic(&["libgone-pf.so"], None, false),
        );
        r.objects.truncate(1);
        let e = closure(&mut r, &mut Resolution::default()).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("libgone-pf.so") && msg.contains("libb.so"),
            "{msg}"
        );
        // A RUNPATH of many elements is cut, not followed forever.
        let long = vec![b':'; 100_000];
        assert_eq!(search_dirs(&long, &dir).len(), MAX_SEARCH_DIRS);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

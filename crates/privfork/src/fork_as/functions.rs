//! Functions registered by name: what a fork server child or an exec-mode
//! fork-as child may run. A request names a function; it never carries a
//! code address, and a closure cannot cross exec.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ipc::Bytes;
use crate::sandbox::Sandbox;

/// A registered function with its types erased: postcard bytes in, a
/// [`ChildOutcome`] out. It only ever runs in a child after its setup.
pub(crate) type ErasedFn = Box<dyn Fn(&[u8]) -> ChildOutcome>;

/// What a registered function gives back in its child: the encoded
/// result, or why the function could not be called.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) enum ChildOutcome {
    Ok(Bytes),
    BadArguments(String),
    EncodeFailed(String),
}

/// One registered function and the sandbox it runs under, if any.
pub(crate) struct Entry {
    pub(crate) f: ErasedFn,
    pub(crate) sandbox: Option<Sandbox>,
}

/// Functions registered by name, for a fork server
/// ([`ForkServerBuilder::functions`](crate::fork_server::ForkServerBuilder::functions))
/// and for fork-as in exec mode ([`exec_entry`](super::exec_entry),
/// [`ForkAs::run_exec`](super::ForkAs::run_exec)).
///
/// A function takes one argument and returns one value, both serde types:
/// the argument arrives postcard-encoded from the caller and is decoded in
/// the child; the result goes back encoded.
///
/// ```
/// use privfork::fork_as::Functions;
///
/// fn word_count(text: String) -> usize {
///     text.split_whitespace().count()
/// }
///
/// let functions = Functions::new().register("word_count", word_count);
/// assert_eq!(functions.names().collect::<Vec<_>>(), ["word_count"]);
/// ```
#[derive(Default)]
pub struct Functions {
    map: BTreeMap<String, Entry>,
}

impl fmt::Debug for Functions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.map.iter().map(|(k, e)| (k, e.sandbox.is_some())))
            .finish()
    }
}

impl Functions {
    /// No function.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `f` under `name`.
    ///
    /// # Panics
    ///
    /// If `name` is already registered (a programming error).
    pub fn register<A, R, F>(self, name: &str, f: F) -> Self
    where
        A: DeserializeOwned,
        R: Serialize,
        F: Fn(A) -> R + 'static,
    {
        self.insert(name, erase(f), None)
    }

    /// Registers `f` under `name`, to run under `sandbox` wherever it runs:
    /// an exec-mode child prepares it from its own image (paths opened as
    /// root, before the drop) and installs it after the drop; a fork server
    /// uses it for every [`allow`](crate::fork_server::ForkServerBuilder::allow)
    /// of the function that gives no sandbox of its own.
    ///
    /// # Panics
    ///
    /// If `name` is already registered (a programming error).
    pub fn register_sandboxed<A, R, F>(self, name: &str, sandbox: Sandbox, f: F) -> Self
    where
        A: DeserializeOwned,
        R: Serialize,
        F: Fn(A) -> R + 'static,
    {
        self.insert(name, erase(f), Some(sandbox))
    }

    /// The registered names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.map.keys().map(String::as_str)
    }

    /// Whether `name` is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Entry> {
        self.map.get(name)
    }

    /// Adds every function of `other`.
    ///
    /// # Panics
    ///
    /// If a name is registered in both.
    pub(crate) fn extend(&mut self, other: Functions) {
        for (name, entry) in other.map {
            let old = self.map.insert(name.clone(), entry);
            assert!(old.is_none(), "function {name:?} registered twice");
        }
    }

    fn insert(mut self, name: &str, f: ErasedFn, sandbox: Option<Sandbox>) -> Self {
        let old = self.map.insert(name.to_owned(), Entry { f, sandbox });
        assert!(old.is_none(), "function {name:?} registered twice");
        self
    }
}

fn erase<A, R, F>(f: F) -> ErasedFn
where
    A: DeserializeOwned,
    R: Serialize,
    F: Fn(A) -> R + 'static,
{
    Box::new(move |bytes: &[u8]| match postcard::from_bytes::<A>(bytes) {
        Err(e) => ChildOutcome::BadArguments(e.to_string()),
        Ok(args) => match postcard::to_allocvec(&f(args)) {
            Ok(out) => ChildOutcome::Ok(Bytes(out)),
            Err(e) => ChildOutcome::EncodeFailed(e.to_string()),
        },
    })
}

//! Typed messages: one Rust enum per direction of a channel.
//!
//! Each variant has a wire type code, a name (used in errors) and the exact
//! number of fds it carries. The enum itself is encoded with postcard as the
//! payload; the header's type code must agree with the decoded variant.
//! Declare a direction with [`message!`](crate::ipc_message):
//!
//! ```
//! use privfork::ipc_message;
//!
//! ipc_message! {
//!     /// What the main process tells a worker.
//!     #[derive(Debug, PartialEq)]
//!     pub enum ToWorker / ToWorkerKind {
//!         /// First message: the generation number.
//!         1 => Hello { generation: u64 },
//!         /// A listening socket, passed as one fd.
//!         2 => Listener { name: String } + fds 1,
//!         3 => Shutdown,
//!     }
//! }
//!
//! use privfork::ipc::Message;
//! let m = ToWorker::Listener { name: "http".into() };
//! assert_eq!(m.kind(), ToWorkerKind::Listener);
//! assert_eq!(ToWorker::describe(ToWorkerKind::Listener).fds, 1);
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

/// What the receiver knows about one message kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsgKind {
    /// Wire type code.
    pub code: u32,
    /// Variant name, for errors and logs.
    pub name: &'static str,
    /// Exact number of fds a message of this kind carries.
    pub fds: u16,
}

/// One direction of a protocol: an enum whose variants are the messages.
///
/// Implemented by [`ipc_message!`](crate::ipc_message); implement it by hand
/// only if the macro does not fit.
pub trait Message: Serialize + for<'de> Deserialize<'de> {
    /// A field-less enum naming the variants, used to declare which kinds
    /// an end accepts in its current state.
    type Kind: Copy + Eq + fmt::Debug + 'static;

    /// Every kind of this direction.
    const KINDS: &'static [Self::Kind];

    /// The kind of this message.
    fn kind(&self) -> Self::Kind;

    /// Code, name and fd count of `kind`.
    fn describe(kind: Self::Kind) -> MsgKind;

    /// The kind with wire code `code`, if there is one.
    fn from_code(code: u32) -> Option<Self::Kind> {
        Self::KINDS
            .iter()
            .copied()
            .find(|k| Self::describe(*k).code == code)
    }
}

/// Declares a message enum for one channel direction, its companion kind
/// enum, and its [`Message`] impl. See the [module docs](crate::ipc::message).
///
/// Choose payload types with hostile peers in mind. The frame limit bounds
/// the bytes received, and postcard never reads past them, but decoding can
/// still allocate more than the payload's size for types that encode
/// smaller than they are in memory: a `Vec<String>` of empty strings costs
/// about 24 bytes of memory per payload byte, and a sequence of zero-sized
/// elements (`Vec<()>`) can declare billions of elements in a few bytes.
/// Integers, `String`, [`Bytes`] and structs of them are safe; avoid
/// zero-sized element types and bound collections of small elements.
///
/// Syntax: `enum Name / KindName { CODE => Variant [fields] [+ fds N], ... }`
/// where fields are `{ a: T, ... }`, `(T, ...)` or nothing. Codes must be
/// distinct (a duplicate is an unreachable-pattern warning). The generated
/// enum derives serde's traits, so the calling crate depends on `serde`
/// with the `derive` feature.
#[macro_export]
macro_rules! ipc_message {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident / $kind:ident {
            $(
                $(#[$vmeta:meta])*
                $code:literal => $variant:ident
                    $( ( $($tty:ty),* $(,)? ) )?
                    $( { $($fname:ident : $fty:ty),* $(,)? } )?
                    $( + fds $nfds:literal )?
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(::serde::Serialize, ::serde::Deserialize)]
        $vis enum $name {
            $(
                $(#[$vmeta])*
                $variant $( ( $($tty),* ) )? $( { $($fname : $fty),* } )?,
            )*
        }

        #[doc = concat!("Kinds of [`", stringify!($name), "`] messages.")]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $kind {
            $(
                #[doc = concat!("[`", stringify!($name), "::", stringify!($variant), "`]")]
                $variant,
            )*
        }

        impl $crate::ipc::Message for $name {
            type Kind = $kind;
            const KINDS: &'static [$kind] = &[$($kind::$variant),*];

            fn kind(&self) -> $kind {
                match self {
                    $( Self::$variant { .. } => $kind::$variant, )*
                }
            }

            fn describe(kind: $kind) -> $crate::ipc::MsgKind {
                match kind {
                    $(
                        $kind::$variant => $crate::ipc::MsgKind {
                            code: $code,
                            name: stringify!($variant),
                            fds: 0 $( + $nfds )?,
                        },
                    )*
                }
            }

            fn from_code(code: u32) -> Option<$kind> {
                match code {
                    $( $code => Some($kind::$variant), )*
                    _ => None,
                }
            }
        }
    };
}

/// A byte string that postcard encodes as length + raw bytes in one copy
/// (a plain `Vec<u8>` goes element by element). Use it for opaque payloads
/// such as a fork-as argument or result.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Bytes(pub Vec<u8>);

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes({} bytes)", self.0.len())
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Self {
        Bytes(v)
    }
}

impl Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Bytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Bytes, A::Error> {
                // Bounded by the payload the decoder already accepted.
                let mut v = Vec::new();
                while let Some(b) = a.next_element::<u8>()? {
                    v.push(b);
                }
                Ok(Bytes(v))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

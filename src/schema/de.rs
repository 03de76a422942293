//! Deserialization helpers shared by the schema types.
//!
//! Wire types keep the keys they do not know in an `extra` map, so provider extras and new
//! OpenAI fields pass through the gateway unchanged. serde's `#[serde(flatten)]` would do that,
//! but it buffers every value and loses the error path (`messages[1].content` becomes `.`), so
//! [`deserialize_with_extras!`] writes the map visitor instead: one pass, no buffering, and
//! `serde_path_to_error` sees every key.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// A map key, borrowed from the input when it has no escapes.
pub(crate) struct Key<'de>(pub(crate) Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// A Unix timestamp in whole seconds that also accepts a float (Nugen sends `1704123600.0`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Timestamp(pub(crate) i64);

impl From<Timestamp> for i64 {
    fn from(t: Timestamp) -> i64 {
        t.0
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TimestampVisitor;
        impl Visitor<'_> for TimestampVisitor {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a Unix timestamp")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Timestamp, E> {
                Ok(Timestamp(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Timestamp, E> {
                i64::try_from(v)
                    .map(Timestamp)
                    .map_err(|_| E::custom("timestamp out of range"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Timestamp, E> {
                if (0.0..1e15).contains(&v) {
                    // Whole seconds: the fraction carries nothing the OpenAI shape can hold.
                    Ok(Timestamp(v.trunc() as i64))
                } else {
                    Err(E::custom("timestamp out of range"))
                }
            }
        }
        deserializer.deserialize_any(TimestampVisitor)
    }
}

/// A non-negative count (tokens, an index) that also accepts a float: orq's schema types
/// them as `number`, so `12.0` must read as 12.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Count(pub(crate) u64);

impl From<Count> for u64 {
    fn from(c: Count) -> u64 {
        c.0
    }
}

impl From<Count> for u32 {
    fn from(c: Count) -> u32 {
        u32::try_from(c.0).unwrap_or(u32::MAX)
    }
}

impl From<Count> for Option<u32> {
    fn from(c: Count) -> Option<u32> {
        Some(c.into())
    }
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CountVisitor;
        impl Visitor<'_> for CountVisitor {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a non-negative count")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Count, E> {
                Ok(Count(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Count, E> {
                u64::try_from(v)
                    .map(Count)
                    .map_err(|_| E::custom("a count cannot be negative"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Count, E> {
                if (0.0..1e18).contains(&v) && v.fract() == 0.0 {
                    Ok(Count(v as u64))
                } else {
                    Err(E::custom(format!("{v} is not a whole non-negative count")))
                }
            }
        }
        deserializer.deserialize_any(CountVisitor)
    }
}

/// Implements `Deserialize` for a struct that derives `Default` and has an
/// `extra: serde_json::Map<String, Value>` field receiving every unknown key.
///
/// `required` fields must be present (a missing one is serde's "missing field" error);
/// `optional` fields keep their default when absent or `null`. A field written
/// `name => field as Wire` is read as `Wire` and converted with `Into`. Every name is also
/// listed in the type's `FIELDS` constant, so other code decides "known or not" from the
/// same list the parser uses.
macro_rules! deserialize_with_extras {
    (
        $ty:ident, $expecting:literal,
        required { $($rname:literal => $rfield:ident),* $(,)? }
        optional { $($oname:literal => $ofield:ident $(as $via:ty)?),* $(,)? }
    ) => {
        impl $ty {
            /// The JSON field names this type reads (every other key goes to `extra`).
            #[allow(
                dead_code,
                reason = "generated for every type; the parser's own tests read most lists"
            )]
            pub(crate) const FIELDS: &'static [&'static str] = &[$($rname,)* $($oname,)*];
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct FieldsVisitor;
                impl<'de> serde::de::Visitor<'de> for FieldsVisitor {
                    type Value = $ty;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str($expecting)
                    }
                    #[allow(unused_mut, unused_assignments)]
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        mut map: A,
                    ) -> Result<$ty, A::Error> {
                        let mut out = <$ty>::default();
                        $(let mut $rfield = false;)*
                        while let Some($crate::schema::de::Key(key)) = map.next_key()? {
                            match &*key {
                                $($rname => {
                                    out.$rfield = map.next_value()?;
                                    $rfield = true;
                                })*
                                $($oname => {
                                    out.$ofield = deserialize_with_extras!(@value map $(, $via)?);
                                })*
                                _ => {
                                    let value = map.next_value()?;
                                    out.extra.insert(key.into_owned(), value);
                                }
                            }
                        }
                        $(if !$rfield {
                            return Err(<A::Error as serde::de::Error>::missing_field($rname));
                        })*
                        Ok(out)
                    }
                }
                deserializer.deserialize_map(FieldsVisitor)
            }
        }
    };
    (@value $map:ident) => {
        $map.next_value::<Option<_>>()?.unwrap_or_default()
    };
    (@value $map:ident, $via:ty) => {
        $map.next_value::<Option<$via>>()?.map(Into::into).unwrap_or_default()
    };
}

pub(crate) use deserialize_with_extras;

/// Implements `Deserialize` for an enum that is either a string or an object/array, choosing
/// the branch from the JSON type so the error path continues into the chosen branch.
macro_rules! string_or {
    ($ty:ident, $expecting:literal, str => $from_str:expr, $kind:ident => $from_other:expr) => {
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct EitherVisitor;
                impl<'de> serde::de::Visitor<'de> for EitherVisitor {
                    type Value = $ty;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$ty, E> {
                        #[allow(clippy::redundant_closure_call)]
                        ($from_str)(v)
                    }
                    string_or!(@other $kind, $from_other);
                }
                deserializer.deserialize_any(EitherVisitor)
            }
        }
    };
    (@other seq, $from:expr) => {
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            let inner = serde::Deserialize::deserialize(
                serde::de::value::SeqAccessDeserializer::new(seq),
            )?;
            #[allow(clippy::redundant_closure_call)]
            Ok(($from)(inner))
        }
    };
    (@other map, $from:expr) => {
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            let inner = serde::Deserialize::deserialize(
                serde::de::value::MapAccessDeserializer::new(map),
            )?;
            #[allow(clippy::redundant_closure_call)]
            Ok(($from)(inner))
        }
    };
}

pub(crate) use string_or;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_accepts_integers_and_floats() {
        let t: Timestamp = serde_json::from_str("1704123600").unwrap();
        assert_eq!(t.0, 1_704_123_600);
        let t: Timestamp = serde_json::from_str("1704123600.9").unwrap();
        assert_eq!(t.0, 1_704_123_600);
        assert!(serde_json::from_str::<Timestamp>("-1.5").is_err());
        assert!(serde_json::from_str::<Timestamp>("\"now\"").is_err());
    }

    #[test]
    fn counts_accept_whole_floats() {
        assert_eq!(serde_json::from_str::<Count>("12").unwrap(), Count(12));
        assert_eq!(serde_json::from_str::<Count>("12.0").unwrap(), Count(12));
        assert!(serde_json::from_str::<Count>("1.5").is_err());
        assert!(serde_json::from_str::<Count>("-1").is_err());
    }
}

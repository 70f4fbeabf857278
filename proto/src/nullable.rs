//! [`Nullable`]: a JSON field that is absent, `null`, or a value — and stays whichever it was.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A JSON object field that tells *absent*, explicit `null`, and a value apart.
///
/// OpenAI-compatible servers disagree on how they say "nothing": OpenAI writes `"finish_reason": null`
/// and `"usage": null` in every stream chunk, DeepSeek writes `"content": null` beside
/// `reasoning_content`, others leave the key out. Fields of that kind use this type with
/// `#[serde(default, skip_serializing_if = "Nullable::is_absent")]`, so a parse → serialize round trip
/// reproduces the key exactly as it came: missing stays missing, `null` stays `null`.
///
/// Outside an object field (say in a `Vec`) [`Nullable::Absent`] has no place to be absent from and is
/// written as `null`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Nullable<T> {
    /// The key was not in the object; it is not written back.
    #[default]
    Absent,
    /// The key was present with the value `null`; it is written back as `null`.
    Null,
    /// The key was present with a value.
    Value(T),
}

impl<T> Nullable<T> {
    /// `None` becomes [`Nullable::Null`] (written as `null`, the OpenAI style).
    pub fn or_null(value: Option<T>) -> Self {
        value.map_or(Self::Null, Self::Value)
    }

    /// `None` becomes [`Nullable::Absent`] (the key is left out).
    pub fn or_absent(value: Option<T>) -> Self {
        value.map_or(Self::Absent, Self::Value)
    }

    /// Whether the key is absent (used by `skip_serializing_if`).
    pub const fn is_absent(&self) -> bool {
        matches!(self, Self::Absent)
    }

    /// Whether the key holds an explicit `null`.
    pub const fn is_null(&self) -> bool {
        matches!(self, Self::Null)
    }

    /// The value, if there is one (absent and `null` both give `None`).
    pub const fn get(&self) -> Option<&T> {
        match self {
            Self::Value(value) => Some(value),
            Self::Absent | Self::Null => None,
        }
    }

    /// The value, mutably, if there is one.
    pub const fn get_mut(&mut self) -> Option<&mut T> {
        match self {
            Self::Value(value) => Some(value),
            Self::Absent | Self::Null => None,
        }
    }

    /// The value, if there is one, by value.
    pub fn into_option(self) -> Option<T> {
        match self {
            Self::Value(value) => Some(value),
            Self::Absent | Self::Null => None,
        }
    }
}

impl<T> From<T> for Nullable<T> {
    fn from(value: T) -> Self {
        Self::Value(value)
    }
}

impl<T: Serialize> Serialize for Nullable<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Value(value) => serializer.serialize_some(value),
            Self::Absent | Self::Null => serializer.serialize_none(),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Nullable<T> {
    /// Called only when the key is present (absent keys take `Default`), so `null` means [`Self::Null`].
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Option::<T>::deserialize(deserializer).map(Self::or_null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Holder {
        #[serde(default, skip_serializing_if = "Nullable::is_absent")]
        field: Nullable<u32>,
    }

    #[test]
    fn absent_null_and_value_each_round_trip() {
        for (input, expected) in [
            (json!({}), Nullable::Absent),
            (json!({ "field": null }), Nullable::Null),
            (json!({ "field": 7 }), Nullable::Value(7)),
        ] {
            let holder: Holder = serde_json::from_value(input.clone()).unwrap();
            assert_eq!(holder.field, expected);
            assert_eq!(serde_json::to_value(&holder).unwrap(), input);
        }
    }

    #[test]
    fn option_conversions() {
        assert_eq!(Nullable::or_null(None::<u8>), Nullable::Null);
        assert_eq!(Nullable::or_absent(None::<u8>), Nullable::Absent);
        assert_eq!(Nullable::or_null(Some(3)).get(), Some(&3));
        assert_eq!(Nullable::<u8>::Null.into_option(), None);
        assert_eq!(Nullable::from(5).into_option(), Some(5));
    }
}

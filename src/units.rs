//! Units in the configuration that serde does not read by itself.

/// Sizes written as a number of bytes or a string such as `"64MiB"` / `"500 KB"`.
pub mod byte_size {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(*bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Size {
            Bytes(u64),
            Text(String),
        }
        match Size::deserialize(deserializer)? {
            Size::Bytes(bytes) => Ok(bytes),
            Size::Text(text) => parse(&text).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "`{text}` is not a size (e.g. 67108864, \"64MiB\", \"500KB\")"
                ))
            }),
        }
    }

    /// The same for an optional size.
    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(
            bytes: &Option<u64>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match bytes {
                Some(bytes) => super::serialize(bytes, serializer),
                None => serializer.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<u64>, D::Error> {
            #[derive(Deserialize)]
            struct Size(#[serde(deserialize_with = "super::deserialize")] u64);
            Ok(Option::<Size>::deserialize(deserializer)?.map(|Size(bytes)| bytes))
        }
    }

    pub fn parse(text: &str) -> Option<u64> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let unit: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1000,
            "kib" | "k" => 1 << 10,
            "mb" => 1000 * 1000,
            "mib" | "m" => 1 << 20,
            "gb" => 1000 * 1000 * 1000,
            "gib" | "g" => 1 << 30,
            _ => return None,
        };
        number.parse::<u64>().ok()?.checked_mul(unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_every_unit_in_either_case() {
        for (text, bytes) in [
            ("512", 512),
            ("512 B", 512),
            ("2kb", 2_000),
            ("2 KiB", 2 << 10),
            ("2k", 2 << 10),
            ("3MB", 3_000_000),
            ("3mib", 3 << 20),
            ("3M", 3 << 20),
            ("1GB", 1_000_000_000),
            ("1 GiB", 1 << 30),
            ("1g", 1 << 30),
        ] {
            assert_eq!(byte_size::parse(text), Some(bytes), "{text}");
        }
        for bad in ["", "MiB", "12 parsecs", "-1KiB", "99999999999999999999G"] {
            assert_eq!(byte_size::parse(bad), None, "{bad}");
        }
    }
}

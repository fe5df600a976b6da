//! A stage's parameters from the Boulder config.

use serde::de::DeserializeOwned;

/// The `params` table of a stage in the Boulder config, as JSON.
#[derive(Clone, Debug)]
pub struct Params {
    json: String,
}

impl Params {
    /// Parameters from JSON text (an empty string counts as `{}`).
    pub fn from_json(json: impl Into<String>) -> Params {
        let json = json.into();
        let json = if json.trim().is_empty() {
            "{}".to_owned()
        } else {
            json
        };
        Params { json }
    }

    /// Deserializes the parameters into a type of the transform's own, usually a
    /// struct with `#[serde(deny_unknown_fields)]` so that a misspelt key is an
    /// error. The error message names the offending key.
    pub fn parse<P: DeserializeOwned>(&self) -> Result<P, String> {
        serde_json::from_str(&self.json).map_err(|e| format!("invalid params: {e}"))
    }

    /// The raw JSON.
    pub fn as_json(&self) -> &str {
        &self.json
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct P {
        #[serde(default)]
        n: u32,
    }

    #[test]
    fn parses_and_names_unknown_keys() {
        assert_eq!(Params::from_json("").parse::<P>().unwrap(), P { n: 0 });
        assert_eq!(
            Params::from_json(r#"{"n":3}"#).parse::<P>().unwrap(),
            P { n: 3 }
        );
        let err = Params::from_json(r#"{"m":3}"#).parse::<P>().unwrap_err();
        assert!(err.contains("unknown field `m`"), "{err}");
    }
}

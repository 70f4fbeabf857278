//! `GET /v1/models` response body.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The model list (`"object": "list"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelList {
    /// Always `list`.
    pub object: String,
    /// The models.
    pub data: Vec<ModelCard>,
}

impl ModelList {
    /// A list of `models`.
    pub fn new(models: Vec<ModelCard>) -> Self {
        Self {
            object: "list".to_owned(),
            data: models,
        }
    }
}

/// One served model (`"object": "model"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelCard {
    /// The name clients put in `model`.
    pub id: String,
    /// Always `model`.
    pub object: String,
    /// Creation time, unix seconds.
    pub created: u64,
    /// Who serves it.
    pub owned_by: String,
    /// Keys not modelled here, verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ModelCard {
    /// A model card.
    pub fn new(id: impl Into<String>, created: u64, owned_by: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            object: "model".to_owned(),
            created,
            owned_by: owned_by.into(),
            extra: Map::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn list_shape() {
        let list = ModelList::new(vec![ModelCard::new("deepseek-r1", 0, "r1-hybrid")]);
        assert_eq!(
            serde_json::to_value(&list).unwrap(),
            json!({"object": "list", "data": [{"id": "deepseek-r1", "object": "model", "created": 0, "owned_by": "r1-hybrid"}]})
        );
    }
}

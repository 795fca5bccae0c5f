//! The text fields a job sends with every request.

/// Extra text fields sent in every request of a job (`FormField`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FormField {
    fields: Vec<(String, String)>,
}

impl FormField {
    /// Adds a field. Fields travel in the order they were added.
    pub fn add(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.fields.push((key.into(), value.into()));
    }

    /// The fields, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

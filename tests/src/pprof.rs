//! A decoder of pprof profiles (`profile.proto`, gzipped), written from pprof's schema and
//! independent of leakguard's encoder, for the tests to read what the endpoint serves.

use std::collections::HashMap;
use std::io::Read;

/// pprof's `Profile` message (the fields the tests read).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Profile {
    /// Sample types, e.g. `inuse_space`/`bytes`.
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    /// Samples.
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<Sample>,
    /// Mappings.
    #[prost(message, repeated, tag = "3")]
    pub mapping: Vec<Mapping>,
    /// Locations.
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    /// Functions.
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    /// Strings, index 0 empty.
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    /// Time of collection, ns since the epoch.
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    /// Kind of events between sampled occurrences.
    #[prost(message, optional, tag = "11")]
    pub period_type: Option<ValueType>,
    /// Events between samples.
    #[prost(int64, tag = "12")]
    pub period: i64,
    /// Free-form comments (string table indices).
    #[prost(int64, repeated, tag = "13")]
    pub comment: Vec<i64>,
    /// Index of the default sample type's `type` string.
    #[prost(int64, tag = "14")]
    pub default_sample_type: i64,
}

/// A (type, unit) pair of string indices.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueType {
    /// Type.
    #[prost(int64, tag = "1")]
    pub r#type: i64,
    /// Unit.
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

/// One sample: a stack (leaf first) and its values.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    /// Location ids, leaf first.
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    /// One value per sample type.
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
}

/// A mapped binary.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Mapping {
    /// Id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Start address.
    #[prost(uint64, tag = "2")]
    pub memory_start: u64,
    /// End address.
    #[prost(uint64, tag = "3")]
    pub memory_limit: u64,
    /// File offset.
    #[prost(uint64, tag = "4")]
    pub file_offset: u64,
    /// File name (string index).
    #[prost(int64, tag = "5")]
    pub filename: i64,
    /// Whether functions are resolved.
    #[prost(bool, tag = "7")]
    pub has_functions: bool,
}

/// A code location: an address and its (inlined) lines.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Location {
    /// Id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Mapping id.
    #[prost(uint64, tag = "2")]
    pub mapping_id: u64,
    /// Address.
    #[prost(uint64, tag = "3")]
    pub address: u64,
    /// Lines, innermost first.
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
}

/// A line in a function.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Line {
    /// Function id.
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
    /// Line number.
    #[prost(int64, tag = "2")]
    pub line: i64,
}

/// A function.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Function {
    /// Id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Name (string index).
    #[prost(int64, tag = "2")]
    pub name: i64,
    /// System name (string index).
    #[prost(int64, tag = "3")]
    pub system_name: i64,
    /// File name (string index).
    #[prost(int64, tag = "4")]
    pub filename: i64,
}

/// Gunzips and decodes a served profile.
pub fn decode(gzipped: &[u8]) -> Result<Profile, String> {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(gzipped)
        .read_to_end(&mut raw)
        .map_err(|e| format!("not gzip: {e}"))?;
    <Profile as prost::Message>::decode(raw.as_slice()).map_err(|e| format!("not pprof: {e}"))
}

impl Profile {
    /// A string of the table.
    pub fn string(&self, i: i64) -> &str {
        self.string_table
            .get(usize::try_from(i).unwrap_or(0))
            .map_or("", String::as_str)
    }

    /// Index of the sample type named `name` (e.g. `inuse_space`).
    pub fn value_index(&self, name: &str) -> Option<usize> {
        self.sample_type
            .iter()
            .position(|t| self.string(t.r#type) == name)
    }

    /// The function name of a sample's leaf (innermost line of its first location).
    pub fn leaf_function(&self, sample: &Sample) -> Option<&str> {
        let loc = self
            .location
            .iter()
            .find(|l| Some(&l.id) == sample.location_id.first())?;
        let line = loc.line.first()?;
        let f = self.function.iter().find(|f| f.id == line.function_id)?;
        Some(self.string(f.name))
    }

    /// Values of `sample_type` summed by leaf function, largest first (what `go tool pprof
    /// -top` lists as *flat*).
    pub fn flat_by_function(&self, sample_type: &str) -> Vec<(String, i64)> {
        let Some(vi) = self.value_index(sample_type) else {
            return Vec::new();
        };
        let mut sums: HashMap<String, i64> = HashMap::new();
        for s in &self.sample {
            let name = self.leaf_function(s).unwrap_or("?").to_owned();
            *sums.entry(name).or_default() += s.value.get(vi).copied().unwrap_or(0);
        }
        let mut v: Vec<(String, i64)> = sums.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v
    }

    /// The comments, as text.
    pub fn comments(&self) -> Vec<&str> {
        self.comment.iter().map(|c| self.string(*c)).collect()
    }
}

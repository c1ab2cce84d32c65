//! Ranking passages of an agent's knowledge files for a query, with BM25.
//!
//! Files are split into passages: paragraphs (separated by blank lines), and long paragraphs into
//! windows of about [`WINDOW_WORDS`] words, so one long file cannot win every query with a single
//! passage. Words are lowercase runs of letters and digits. The index is plain data built from
//! the files alone, so one is kept per deployed version ([`super::indexes`]).

use std::collections::HashMap;

use events::spec::KnowledgeFile;
use serde::Serialize;

/// BM25's term-frequency saturation.
const K1: f64 = 1.2;
/// BM25's length normalisation.
const B: f64 = 0.75;
/// Words per passage when a paragraph is split.
pub const WINDOW_WORDS: usize = 80;

/// One ranked passage, as a `knowledge` node outputs it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Passage {
    /// The knowledge file's name.
    pub source: String,
    pub text: String,
    pub score: f64,
}

/// The passages of a set of knowledge files with the statistics BM25 needs.
#[derive(Debug, Clone, Default)]
pub struct KnowledgeIndex {
    passages: Vec<Indexed>,
    /// In how many passages each word occurs.
    document_frequency: HashMap<String, usize>,
    average_len: f64,
    /// About how much memory the index takes, for the cache's budget.
    bytes: usize,
}

#[derive(Debug, Clone)]
struct Indexed {
    source: String,
    text: String,
    term_counts: HashMap<String, u32>,
    len: usize,
}

impl KnowledgeIndex {
    pub fn build(files: &[KnowledgeFile]) -> Self {
        let mut passages = Vec::new();
        let mut document_frequency: HashMap<String, usize> = HashMap::new();
        for file in files {
            for text in split_passages(&file.content) {
                let words = tokenize(&text);
                let mut term_counts: HashMap<String, u32> = HashMap::new();
                for word in &words {
                    *term_counts.entry(word.clone()).or_default() += 1;
                }
                for term in term_counts.keys() {
                    *document_frequency.entry(term.clone()).or_default() += 1;
                }
                passages.push(Indexed {
                    source: file.name.clone(),
                    text,
                    term_counts,
                    len: words.len(),
                });
            }
        }
        let total: usize = passages.iter().map(|p| p.len).sum();
        let average_len = if passages.is_empty() {
            0.0
        } else {
            total as f64 / passages.len() as f64
        };
        let bytes = approx_bytes(&passages, &document_frequency);
        KnowledgeIndex {
            passages,
            document_frequency,
            average_len,
            bytes,
        }
    }

    /// About how many bytes of memory the index holds: its texts, words and table slots.
    pub fn approx_bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.passages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.passages.is_empty()
    }

    /// The `k` best passages for `query` with a score above zero, best first; passages with
    /// equal scores keep their order in the files.
    pub fn search(&self, query: &str, k: usize) -> Vec<Passage> {
        let mut terms = tokenize(query);
        terms.sort();
        terms.dedup();
        let n = self.passages.len() as f64;
        let idf: Vec<(&str, f64)> = terms
            .iter()
            .filter_map(|term| {
                let df = *self.document_frequency.get(term)? as f64;
                Some((term.as_str(), ((n - df + 0.5) / (df + 0.5)).ln_1p()))
            })
            .collect();
        let mut scored: Vec<(usize, f64)> = self
            .passages
            .iter()
            .enumerate()
            .map(|(i, passage)| (i, self.score(passage, &idf)))
            .filter(|(_, score)| *score > 0.0)
            .collect();
        // A stable sort: ties keep the files' order.
        scored.sort_by(|a, b| b.1.total_cmp(&a.1));
        scored
            .into_iter()
            .take(k)
            .map(|(i, score)| Passage {
                source: self.passages[i].source.clone(),
                text: self.passages[i].text.clone(),
                score,
            })
            .collect()
    }

    fn score(&self, passage: &Indexed, idf: &[(&str, f64)]) -> f64 {
        let norm = if self.average_len > 0.0 {
            1.0 - B + B * passage.len as f64 / self.average_len
        } else {
            1.0
        };
        idf.iter()
            .map(|(term, idf)| {
                let tf = passage.term_counts.get(*term).copied().unwrap_or(0) as f64;
                idf * tf * (K1 + 1.0) / (tf + K1 * norm)
            })
            .sum()
    }
}

fn approx_bytes(passages: &[Indexed], document_frequency: &HashMap<String, usize>) -> usize {
    // A table slot: the key `String`, the value, and the table's control byte.
    fn table<V>(map: &HashMap<String, V>) -> usize {
        let slot = std::mem::size_of::<(String, V)>() + 1;
        map.capacity() * slot + map.keys().map(String::len).sum::<usize>()
    }
    let passages: usize = passages
        .iter()
        .map(|p| {
            std::mem::size_of::<Indexed>() + p.source.len() + p.text.len() + table(&p.term_counts)
        })
        .sum();
    passages + table(document_frequency)
}

/// Paragraphs on blank lines; a paragraph longer than [`WINDOW_WORDS`] words becomes windows of
/// that many words (its line breaks collapse to spaces).
fn split_passages(content: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut paragraph: Vec<&str> = Vec::new();
    let mut flush = |paragraph: &mut Vec<&str>| {
        if paragraph.is_empty() {
            return;
        }
        let text = paragraph.join("\n");
        paragraph.clear();
        let words: Vec<&str> = text.split_whitespace().collect();
        if words.len() <= WINDOW_WORDS {
            out.push(text.trim().to_owned());
        } else {
            out.extend(words.chunks(WINDOW_WORDS).map(|window| window.join(" ")));
        }
    };
    for line in content.lines() {
        if line.trim().is_empty() {
            flush(&mut paragraph);
        } else {
            paragraph.push(line);
        }
    }
    flush(&mut paragraph);
    out
}

fn tokenize(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, content: &str) -> KnowledgeFile {
        KnowledgeFile {
            name: name.into(),
            content: content.into(),
        }
    }

    fn files() -> Vec<KnowledgeFile> {
        vec![
            file(
                "faq.md",
                "# FAQ\n\nOpening hours: we are open from 9 to 17 on weekdays.\n\n\
                 Refunds: a refund is paid within 14 days of the return.\n\n\
                 Shipping takes 3 days within the country.",
            ),
            file(
                "policy.md",
                "Returns are accepted for 30 days.\nThe item must be unused.\n\n\
                 Our office is closed on public holidays.",
            ),
        ]
    }

    #[test]
    fn the_right_passage_ranks_first() {
        let index = KnowledgeIndex::build(&files());
        assert_eq!(index.len(), 6);
        let hits = index.search("How long until my REFUND is paid?", 3);
        assert_eq!(hits[0].source, "faq.md");
        assert!(hits[0].text.starts_with("Refunds:"), "{hits:?}");
        let hits = index.search("when are you open", 3);
        assert!(hits[0].text.starts_with("Opening hours"), "{hits:?}");
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
        let hits = index.search("returns", 1);
        assert_eq!(hits[0].source, "policy.md");
        assert_eq!(
            hits[0].text,
            "Returns are accepted for 30 days.\nThe item must be unused."
        );
    }

    #[test]
    fn top_k_is_respected_and_ties_keep_file_order() {
        let index = KnowledgeIndex::build(&[
            file("a", "alpha one\n\nalpha two\n\nalpha three"),
            file("b", "beta"),
        ]);
        let hits = index.search("alpha", 2);
        assert_eq!(hits.len(), 2);
        assert_eq!(hits[0].text, "alpha one");
        assert_eq!(hits[1].text, "alpha two");
        assert_eq!(hits[0].score, hits[1].score);
        assert!(hits[0].score > 0.0);
        assert!(index.search("alpha", 0).is_empty());
    }

    #[test]
    fn no_match_is_empty() {
        let index = KnowledgeIndex::build(&files());
        assert!(index.search("zebra quantum", 5).is_empty());
        assert!(index.search("", 5).is_empty());
        assert!(KnowledgeIndex::build(&[]).search("refund", 5).is_empty());
    }

    #[test]
    fn long_paragraphs_become_windows() {
        let long: Vec<String> = (0..200).map(|i| format!("w{i}")).collect();
        let index = KnowledgeIndex::build(&[file("long.txt", &long.join(" "))]);
        assert_eq!(index.len(), 3);
        let hits = index.search("w150", 5);
        assert_eq!(hits.len(), 1);
        assert!(hits[0].text.starts_with("w80 "), "{hits:?}");
        assert_eq!(hits[0].text.split(' ').count(), WINDOW_WORDS);
    }
}

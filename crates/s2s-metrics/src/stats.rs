//! What BLEU and chrF share in computing their sufficient statistics: the configuration and the
//! reference streams are checked, then the per-segment statistics are summed over the corpus.
//! Each metric supplies only its own segment statistics, through [`SegmentMetric`].

use crate::MetricsError;

/// A metric configuration whose corpus statistics are the sum of its segment statistics.
pub(crate) trait SegmentMetric {
    /// The sufficient statistics, of one segment or summed over a corpus.
    type Stats;

    /// Checks the configuration (the metric's public `validate`).
    fn check_config(&self) -> Result<(), MetricsError>;

    /// The statistics of an empty corpus, which segments are added to.
    fn zero_stats(&self) -> Self::Stats;

    /// Adds the statistics of one segment to `total`.
    fn add_stats(total: &mut Self::Stats, segment: &Self::Stats);

    /// The statistics of one segment against its references; the configuration is valid and
    /// there is at least one reference.
    fn segment_stats_unchecked<S: AsRef<str>>(&self, hyp: &str, refs: &[S]) -> Self::Stats;
}

/// The statistics of a corpus, summed over its segments (`refs[k][i]` is the `k`-th reference
/// of `hyps[i]`).
pub(crate) fn corpus_stats<M, H, R, S>(
    metric: &M,
    hyps: &[H],
    refs: &[R],
) -> Result<M::Stats, MetricsError>
where
    M: SegmentMetric,
    H: AsRef<str>,
    R: AsRef<[S]>,
    S: AsRef<str>,
{
    metric.check_config()?;
    check_streams(hyps.len(), refs)?;
    let mut total = metric.zero_stats();
    for (i, hyp) in hyps.iter().enumerate() {
        let segment = metric.segment_stats_unchecked(hyp.as_ref(), &segment_refs(refs, i));
        M::add_stats(&mut total, &segment);
    }
    Ok(total)
}

/// The statistics of a corpus whose segments each have their own references (`refs[i]` are
/// those of `hyps[i]`, at least one, any number), and the number of references: `Some(n)`
/// when every segment has `n`, `None` when the numbers vary (sacreBLEU's `nrefs:var`, what it
/// computes from reference streams padded with `None`).
pub(crate) fn grouped_stats<M, H, R, S>(
    metric: &M,
    hyps: &[H],
    refs: &[R],
) -> Result<(M::Stats, Option<usize>), MetricsError>
where
    M: SegmentMetric,
    H: AsRef<str>,
    R: AsRef<[S]>,
    S: AsRef<str>,
{
    metric.check_config()?;
    if refs.len() != hyps.len() {
        return Err(MetricsError::GroupCountMismatch {
            expected: hyps.len(),
            found: refs.len(),
        });
    }
    let mut total = metric.zero_stats();
    let mut counts = std::collections::BTreeSet::new();
    for (segment, (hyp, refs)) in hyps.iter().zip(refs).enumerate() {
        let refs = refs.as_ref();
        if refs.is_empty() {
            return Err(MetricsError::EmptyReferenceList { segment });
        }
        counts.insert(refs.len());
        M::add_stats(
            &mut total,
            &metric.segment_stats_unchecked(hyp.as_ref(), refs),
        );
    }
    let nrefs = match (counts.len(), counts.first()) {
        (1, Some(&n)) => Some(n),
        (0, _) => Some(1),
        _ => None,
    };
    Ok((total, nrefs))
}

/// The signature of `signature_for_one` (made for one reference) for `nrefs` references per
/// segment: `nrefs:N`, or `nrefs:var` when the numbers vary.
pub(crate) fn with_nrefs(signature_for_one: String, nrefs: Option<usize>) -> String {
    let label = nrefs.map_or("var".to_string(), |n| n.to_string());
    signature_for_one.replacen("nrefs:1|", &format!("nrefs:{label}|"), 1)
}

/// The statistics of one segment against its references (at least one).
pub(crate) fn segment_stats<M, S>(
    metric: &M,
    hyp: &str,
    refs: &[S],
) -> Result<M::Stats, MetricsError>
where
    M: SegmentMetric,
    S: AsRef<str>,
{
    metric.check_config()?;
    if refs.is_empty() {
        return Err(MetricsError::NoReferences);
    }
    Ok(metric.segment_stats_unchecked(hyp, refs))
}

/// Checks the reference streams against the hypotheses and returns the number of streams.
fn check_streams<R, S>(n_hyps: usize, refs: &[R]) -> Result<usize, MetricsError>
where
    R: AsRef<[S]>,
{
    if refs.is_empty() {
        return Err(MetricsError::NoReferences);
    }
    for (stream, r) in refs.iter().enumerate() {
        let found = r.as_ref().len();
        if found != n_hyps {
            return Err(MetricsError::LengthMismatch {
                stream,
                expected: n_hyps,
                found,
            });
        }
    }
    Ok(refs.len())
}

/// The references of segment `i`, one per stream.
fn segment_refs<'a, R, S>(refs: &'a [R], i: usize) -> Vec<&'a str>
where
    R: AsRef<[S]>,
    S: AsRef<str> + 'a,
{
    refs.iter().map(|r| r.as_ref()[i].as_ref()).collect()
}

//! The charge of one call in flight ([`CallCharge`]): it owns the call's reservation and its
//! attempt record, so the call settles exactly once, whatever ends it.
//!
//! The router writes each attempt into the record as it is sent (as in flight) and replaces
//! it with its outcome, so the record is complete at any moment. When the router returns,
//! the call settles with the answer ([`CallCharge::settle`]) or hands its reservation to the
//! stream that came ([`CallCharge::stream`]). When the call's future is dropped midway (a
//! client that disconnected, a stage's `complete()` cut by its hard timeout), `Drop` settles
//! it from the record: every attempt the upstream received is charged, the one in flight
//! included, from a local count of its prompt marked estimated — the provider bills a
//! request it started on whether or not anyone reads the answer.

use std::sync::Arc;

use super::costing::StreamCharge;
use super::{CallSite, Costing};
use crate::cost::Hold;
use crate::router::Attempt;
use crate::wit::{ChatRequest, ChatResponse};

/// The reservation and attempt record of one call, settled exactly once.
pub(super) struct CallCharge<'a> {
    /// The step's costing.
    costing: &'a Arc<Costing>,
    /// The reservation, until settled.
    hold: Option<Hold>,
    /// The request, to count its prompt.
    request: &'a ChatRequest,
    /// Where the call is accounted.
    site: CallSite<'a>,
    /// Every attempt so far, the one in flight included: the router writes here.
    pub(super) attempts: Vec<Attempt>,
}

impl<'a> CallCharge<'a> {
    /// The charge of a call of `request` holding `hold`, accounted at `site`.
    pub(super) fn new(
        costing: &'a Arc<Costing>,
        hold: Hold,
        request: &'a ChatRequest,
        site: CallSite<'a>,
    ) -> CallCharge<'a> {
        CallCharge {
            costing,
            hold: Some(hold),
            request,
            site,
            attempts: Vec::new(),
        }
    }

    /// Settles with the call's `answer` (none: the call failed); returns the attempt record.
    pub(super) fn settle(mut self, answer: Option<&ChatResponse>) -> Vec<Attempt> {
        self.close(answer);
        std::mem::take(&mut self.attempts)
    }

    /// A stream came from the last attempt: the reservation goes to the stream's charge,
    /// with the charges of the attempts before it. Returns that charge and the record.
    pub(super) fn stream(mut self) -> (StreamCharge, Vec<Attempt>) {
        let attempts = std::mem::take(&mut self.attempts);
        let (model, earlier) = match attempts.split_last() {
            Some((last, earlier)) => (last.model.clone(), earlier),
            None => (String::new(), &[][..]),
        };
        let charge = StreamCharge {
            costing: self.costing.clone(),
            hold: self.hold.take(),
            earlier: self.costing.charges(self.request, earlier, None),
            model,
            request: self.request.clone(),
            meter: self.site.meter.clone(),
            route: self.site.route.to_string(),
            cache: self.site.cache,
        };
        (charge, attempts)
    }

    /// Settles the reservation, if still held, with the record and `answer`.
    fn close(&mut self, answer: Option<&ChatResponse>) {
        if let Some(hold) = self.hold.take() {
            let charges = self.costing.charges(self.request, &self.attempts, answer);
            self.costing.close(hold, charges, self.site);
        }
    }
}

impl Drop for CallCharge<'_> {
    /// The call was dropped midway: every attempt the upstream received is charged (the
    /// one in flight from a local count of its prompt).
    fn drop(&mut self) {
        self.close(None);
    }
}

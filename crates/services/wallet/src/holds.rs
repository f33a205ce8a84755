//! A generation's credits, the wallet's side of the saga (consumer `wallet.generations`,
//! all of one generation's events in order):
//!
//! * `studio.GenerationRequested` — hold the price from the requester's available money
//!   and answer `wallet.CreditsHeld`, or record the refusal and answer
//!   `wallet.CreditsRefused`;
//! * `studio.ImageGenerated` — the image becomes an asset its creator owns **and** the
//!   hold is captured (to `platform:generation_revenue`), in one transaction;
//! * `studio.GenerationFailed` — the hold is released.
//!
//! Each hold is keyed by `generation:<id>`, so a redelivered or repeated request never
//! holds or charges twice, and a capture or release finds the hold at most once.

use std::sync::Arc;

use async_trait::async_trait;
use rendermart_platform::{
    bus::HandlerError,
    consumer::{EventHandler, HandlerContext},
    events::{DecodeError, Envelope, Event, Incoming},
};
use rendermart_studio_api::{GenerationFailed, GenerationId, GenerationRequested, ImageGenerated};
use rendermart_wallet_api::{CreditsHeld, CreditsRefused, HOLD_AGGREGATE};

use crate::ledger::{HoldOutcome, Ledger, WalletError, GENERATION_REVENUE};

/// The events of a generation the wallet applies.
pub enum GenerationEvent {
    Requested(GenerationRequested),
    Generated(ImageGenerated),
    Failed(GenerationFailed),
}

impl Incoming for GenerationEvent {
    fn event_types() -> Vec<String> {
        vec![
            GenerationRequested::TYPE.into(),
            ImageGenerated::TYPE.into(),
            GenerationFailed::TYPE.into(),
        ]
    }

    fn decode(envelope: &Envelope) -> Result<Self, DecodeError> {
        match envelope.event_type.as_str() {
            GenerationRequested::TYPE => envelope.decode().map(Self::Requested),
            ImageGenerated::TYPE => envelope.decode().map(Self::Generated),
            GenerationFailed::TYPE => envelope.decode().map(Self::Failed),
            _ => Err(DecodeError::unexpected("a generation event", envelope)),
        }
    }
}

/// The hold's reference in the ledger.
pub fn reference(generation: GenerationId) -> String {
    format!("generation:{generation}")
}

pub struct GenerationsIn {
    ledger: Arc<Ledger>,
}

impl GenerationsIn {
    pub fn new(ledger: Arc<Ledger>) -> Self {
        Self { ledger }
    }
}

fn handler_error(e: WalletError) -> HandlerError {
    match e {
        WalletError::Unavailable(why) => HandlerError::transient(anyhow::anyhow!(why)),
        other => HandlerError::permanent(other),
    }
}

#[async_trait]
impl EventHandler for GenerationsIn {
    type Message = GenerationEvent;

    async fn handle(
        &self,
        cx: &mut HandlerContext<'_>,
        event: GenerationEvent,
    ) -> Result<(), HandlerError> {
        match event {
            GenerationEvent::Requested(ask) => {
                let outcome = self
                    .ledger
                    .hold(
                        cx.conn(),
                        ask.user,
                        &reference(ask.generation_id),
                        "generation",
                        ask.amount,
                        &ask.description,
                    )
                    .await
                    .map_err(handler_error)?;
                let answer = match outcome {
                    HoldOutcome::Held => Envelope::new(&CreditsHeld {
                        generation_id: ask.generation_id,
                        user: ask.user,
                        amount: ask.amount,
                    }),
                    HoldOutcome::Refused { available } => Envelope::new(&CreditsRefused {
                        generation_id: ask.generation_id,
                        user: ask.user,
                        amount: ask.amount,
                        available,
                        currency: self.ledger.currency().code().to_owned(),
                    }),
                    // Answered when it was decided.
                    HoldOutcome::Decided => return Ok(()),
                };
                metrics::counter!("wallet_generation_holds_total", "outcome" => if matches!(outcome, HoldOutcome::Held) { "held" } else { "refused" }).increment(1);
                cx.publish(&answer.with_aggregate(HOLD_AGGREGATE, ask.generation_id))
                    .await?;
            }
            GenerationEvent::Generated(image) => {
                crate::assets::create_from(cx.conn(), &image).await?;
                self.ledger
                    .capture(
                        cx.conn(),
                        &reference(image.generation_id),
                        &format!("Image generation: \"{}\"", short(&image.prompt)),
                        |amount| vec![(GENERATION_REVENUE.to_owned(), amount)],
                    )
                    .await
                    .map_err(handler_error)?;
            }
            GenerationEvent::Failed(failed) => {
                self.ledger
                    .release(
                        cx.conn(),
                        &reference(failed.generation_id),
                        "Image generation failed; the credits are back",
                    )
                    .await
                    .map_err(handler_error)?;
            }
        }
        Ok(())
    }
}

/// The first 60 characters of a prompt, with an ellipsis when cut.
fn short(prompt: &str) -> String {
    let mut s: String = prompt.chars().take(60).collect();
    if s.len() < prompt.len() {
        s.push('…');
    }
    s
}

//! An RTCP interceptor that reports keyframe requests (PLI, RFC 4585 §6.3.1; FIR,
//! RFC 5104 §4.3.1) from the viewer.
//!
//! webrtc-rs 0.21 ends its interceptor chain with a terminus that drops inbound RTCP, so
//! `TrackLocal::poll` never sees a PLI. This interceptor sits in the chain, passes every
//! packet on unchanged, and signals the session through a channel when one arrives.

use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::sansio::Protocol;
use std::collections::VecDeque;
use std::time::Instant;
use tokio::sync::mpsc;

/// Chain position: above every built-in interceptor (the report generators end at
/// 11 000), below the application.
pub(crate) const SLOT: usize = 20_000;

/// Pass-through interceptor that sends `()` on `keyframe` for each PLI or FIR read.
/// `keyframe` is meant to have capacity 1: a request still waiting covers every PLI
/// that arrives before the session takes it, so a viewer flooding PLIs costs a
/// `try_send` each and no memory.
pub(crate) struct KeyframeFeedback {
    keyframe: mpsc::Sender<()>,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl KeyframeFeedback {
    pub(crate) fn new(keyframe: mpsc::Sender<()>) -> Self {
        Self {
            keyframe,
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        }
    }
}

/// Whether a compound RTCP packet asks for a keyframe.
fn wants_keyframe(packets: &[Box<dyn rtc::rtcp::Packet>]) -> bool {
    packets
        .iter()
        .any(|p| p.as_any().is::<PictureLossIndication>() || p.as_any().is::<FullIntraRequest>())
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeFeedback {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet
            && wants_keyframe(packets)
        {
            // Full: a request is already pending. Closed: the session has ended.
            let _ = self.keyframe.try_send(());
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }
}

impl Interceptor for KeyframeFeedback {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::{AttributedPacket, Registry, Slot};
    use rtc::rtcp::receiver_report::ReceiverReport;

    fn read(chain: &mut impl Interceptor, packets: Vec<Box<dyn rtc::rtcp::Packet>>) {
        chain
            .handle_read(TaggedPacket {
                now: Instant::now(),
                transport: Default::default(),
                message: AttributedPacket::new(Packet::Rtcp(packets)),
            })
            .unwrap();
        while chain.poll_read().is_some() {}
    }

    #[test]
    fn reports_pli_and_fir_but_not_receiver_reports() {
        let (tx, mut rx) = mpsc::channel(1);
        let mut chain = Registry::new()
            .with(Slot::from(SLOT), KeyframeFeedback::new(tx))
            .build();
        read(&mut chain, vec![Box::new(ReceiverReport::default())]);
        assert!(rx.try_recv().is_err());
        read(
            &mut chain,
            vec![
                Box::new(ReceiverReport::default()),
                Box::new(PictureLossIndication {
                    sender_ssrc: 1,
                    media_ssrc: 2,
                }),
            ],
        );
        assert!(rx.try_recv().is_ok());
        read(&mut chain, vec![Box::new(FullIntraRequest::default())]);
        assert!(rx.try_recv().is_ok());
        // A flood while the session is busy leaves one pending request, not a queue.
        for _ in 0..1000 {
            read(&mut chain, vec![Box::new(FullIntraRequest::default())]);
        }
        assert!(rx.try_recv().is_ok());
        assert!(
            rx.try_recv().is_err(),
            "PLIs coalesce into one pending request"
        );
    }
}

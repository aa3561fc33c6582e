//! Makes an interceptor that tracks local streams by SSRC see the RTX stream too.
//!
//! `rtc`'s TWCC sender stamps transport-wide sequence numbers only on the SSRCs bound
//! to it, and its congestion controller records only those; the RTX SSRC of a stream
//! (RFC 4588) is never bound on its own. Resends and probe padding on the RTX stream
//! must carry the sequence number and be resolved against the feedback like any
//! packet (draft-holmer-rmcat-transport-wide-cc-extensions-01 §1: the sequence space is
//! the transport's), so [`BindRtx`] binds a stream's RTX SSRC alongside it, with the
//! same header extensions.

use rtc::interceptor::{Interceptor, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;
use std::time::Instant;

/// `I`, with each local stream's RTX SSRC bound as a stream of its own.
pub(crate) struct BindRtx<I>(pub I);

fn rtx_info(info: &StreamInfo) -> Option<StreamInfo> {
    let ssrc = info.ssrc_rtx?;
    Some(StreamInfo {
        ssrc,
        ssrc_rtx: None,
        payload_type: info.payload_type_rtx.unwrap_or(info.payload_type),
        ..info.clone()
    })
}

impl<I: Interceptor> Protocol<TaggedPacket, TaggedPacket, ()> for BindRtx<I> {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.0.handle_read(msg)
    }
    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.0.poll_read()
    }
    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.0.handle_write(msg)
    }
    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.0.poll_write()
    }
    fn handle_event(&mut self, evt: ()) -> Result<(), Self::Error> {
        self.0.handle_event(evt)
    }
    fn poll_event(&mut self) -> Option<()> {
        self.0.poll_event()
    }
    fn handle_timeout(&mut self, now: Instant) -> Result<(), Self::Error> {
        self.0.handle_timeout(now)
    }
    fn poll_timeout(&mut self) -> Option<Instant> {
        self.0.poll_timeout()
    }
    fn close(&mut self) -> Result<(), Self::Error> {
        self.0.close()
    }
}

impl<I: Interceptor> Interceptor for BindRtx<I> {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        self.0.bind_local_stream(info);
        if let Some(rtx) = rtx_info(info) {
            self.0.bind_local_stream(&rtx);
        }
    }
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.0.unbind_local_stream(info);
        if let Some(rtx) = rtx_info(info) {
            self.0.unbind_local_stream(&rtx);
        }
    }
    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        self.0.bind_remote_stream(info);
    }
    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.0.unbind_remote_stream(info);
    }
}

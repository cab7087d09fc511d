// One participant's side of the session protocol, without the transport: what the Python
// SDK's SessionClient (holo/client/session.py) and the page's SessionConnection
// (holo/web/src/session.js) decide, driven by plain inputs so a test can drive it.
//
// The transport (Runtime/HoloSession.cs) opens the Join stream with JoinParameters(),
// hands each stream message to OnAccepted / OnEvent(s) / OnEphemeral / OnResync with the
// time it arrived, and when the stream ends or fails asks StreamBroken how long to wait
// before joining again. The decisions, each as in Python:
//
// * Joining again after the first JoinAccepted names the participant id the server gave
//   and resume_from_seq = the last seq applied: the server sends the events after it
//   (or a snapshot when they are too old to replay), so nothing is missed.
// * Events apply in seq order only. A repeat (seq <= the state's) is skipped: never apply
//   twice. A gap (seq > state + 1) is never folded past: the outcome is Gap, and the
//   transport ends the stream and joins again from the last seq applied.
// * A resync replaces the state with its snapshot (the server found this client too far
//   behind, or a replay seeked).
// * Every message resets the count of failures in a row; a break adds one, and more than
//   RetryPolicy.Attempts in a row (20 for sessions) gives up. The wait grows from 50 ms
//   to 1 s (RetryPolicy.Session).
// * Heartbeats: the server counts a stream it keeps writing to as a sign of life, so a
//   heartbeat is sent only when the stream has been quiet for an interval, or when this
//   participant is marked away (a heartbeat brings it back). Waits between checks are
//   jittered to 0.8-1.0 of the interval, so clients a busy node answered together do not
//   stay in step and hit it together every interval from then on.
using System;
using System.Collections.Generic;

namespace Holo.Bridge.Core
{
    /// <summary>What became of one event.</summary>
    public enum EventOutcome
    {
        /// <summary>Folded into the state.</summary>
        Applied,
        /// <summary>Already folded (seq at or below the state's): skipped.</summary>
        Repeat,
        /// <summary>Does not follow the state: not folded; end the stream and join again.</summary>
        Gap,
    }

    /// <summary>The fields of the next JoinRequest that the protocol decides.</summary>
    public struct JoinParameters
    {
        /// <summary>"" on the first join (the server assigns one), then the id it gave.</summary>
        public readonly string ParticipantId;
        /// <summary>0 on the first join (a snapshot comes), then the last seq applied.</summary>
        public readonly long ResumeFromSeq;

        public JoinParameters(string participantId, long resumeFromSeq)
        {
            ParticipantId = participantId;
            ResumeFromSeq = resumeFromSeq;
        }
    }

    public sealed class SessionLink
    {
        /// <summary>Stream errors and anomalies kept for diagnosis (the newest), as Python's.</summary>
        public const int MaxErrors = 100;
        /// <summary>The heartbeat interval until the server says otherwise, and when it says
        /// 0 (holo/session/live.py HubConfig: 2 s, away after three missed).</summary>
        public const double DefaultHeartbeatIntervalS = 2.0;

        readonly RetryPolicy retry;
        readonly List<string> errors = new List<string>();
        readonly Dictionary<string, EphemeralUpdate> latest = new Dictionary<string, EphemeralUpdate>();
        int failures;
        double lastMessageS = double.NegativeInfinity;

        public SessionLink(RetryPolicy retry = null)
        {
            this.retry = retry ?? RetryPolicy.Session;
            State = new SessionState();
            ParticipantId = "";
            HeartbeatIntervalS = DefaultHeartbeatIntervalS;
        }

        /// <summary>The id the server gave this participant ("" before the first accept).</summary>
        public string ParticipantId { get; private set; }
        /// <summary>The folded state: the snapshot and every event since.</summary>
        public SessionState State { get; private set; }
        /// <summary>True once a JoinAccepted arrived (from then on a join resumes).</summary>
        public bool IsAccepted { get; private set; }
        public double HeartbeatIntervalS { get; private set; }
        /// <summary>How often the server resent the state, and how often the stream was reopened.</summary>
        public int Resyncs { get; private set; }
        public int Reconnects { get; private set; }
        /// <summary>Breaks in a row since the last message.</summary>
        public int Failures { get { return failures; } }
        public IList<string> Errors { get { return errors.AsReadOnly(); } }

        /// <summary>Given: fed every reset, event and ephemeral value (the state as of any
        /// recent moment, to pair with video frames).</summary>
        public SessionTimeline Timeline { get; set; }

        /// <summary>The state was replaced (first snapshot, a resync, a resume that came
        /// with a snapshot): the state and its session time.</summary>
        public event Action<SessionState, long> Reset;
        /// <summary>An event was folded: the event and the state after it.</summary>
        public event Action<SessionEvent, SessionState> Applied;
        public event Action<EphemeralUpdate> EphemeralReceived;

        /// <summary>The newest ephemeral value of a participant's channel, or null.</summary>
        public EphemeralUpdate Latest(string participantId, string channel)
        {
            EphemeralUpdate update;
            return latest.TryGetValue(participantId + "\n" + channel, out update) ? update : null;
        }

        /// <summary>The participant id and resume seq of the next JoinRequest.</summary>
        public JoinParameters JoinParameters()
        {
            return new JoinParameters(ParticipantId, IsAccepted ? State.Seq : 0);
        }

        void Arrived(double nowS)
        {
            failures = 0;
            lastMessageS = nowS;
        }

        /// <summary>The stream's first message. <paramref name="snapshot"/> is null when the
        /// join resumed (the missed events follow); <paramref name="heartbeatIntervalMs"/> 0
        /// means the default.</summary>
        public void OnAccepted(string participantId, uint heartbeatIntervalMs, SessionSnapshot snapshot, double nowS)
        {
            Arrived(nowS);
            ParticipantId = participantId ?? "";
            HeartbeatIntervalS = heartbeatIntervalMs > 0 ? heartbeatIntervalMs / 1000.0 : DefaultHeartbeatIntervalS;
            if (snapshot != null) ResetTo(snapshot);
            IsAccepted = true;
        }

        /// <summary>One event from the stream (see EventOutcome).</summary>
        public EventOutcome OnEvent(SessionEvent e, double nowS)
        {
            Arrived(nowS);
            return Fold(e);
        }

        /// <summary>A batch: folded in order up to the first gap (whose outcome is returned;
        /// the events before it stay folded, as in Python).</summary>
        public EventOutcome OnEvents(IEnumerable<SessionEvent> events, double nowS)
        {
            Arrived(nowS);
            EventOutcome last = EventOutcome.Repeat;
            foreach (SessionEvent e in events)
            {
                EventOutcome outcome = Fold(e);
                if (outcome == EventOutcome.Gap) return outcome;
                if (outcome == EventOutcome.Applied) last = outcome;
            }
            return last;
        }

        EventOutcome Fold(SessionEvent e)
        {
            if (e.Seq != State.Seq + 1)
            {
                Note("seq " + e.Seq + " after " + State.Seq);
                return e.Seq <= State.Seq ? EventOutcome.Repeat : EventOutcome.Gap;
            }
            SessionFold.Apply(State, e);
            if (Timeline != null) Timeline.OnEvent(e);
            if (Applied != null) Applied(e, State);
            return EventOutcome.Applied;
        }

        /// <summary>The server resent the state.</summary>
        public void OnResync(SessionSnapshot snapshot, double nowS)
        {
            Arrived(nowS);
            Resyncs += 1;
            ResetTo(snapshot);
        }

        /// <summary>Ephemeral values (a message of one or a batch): the newest per
        /// participant and channel is kept.</summary>
        public void OnEphemerals(IEnumerable<EphemeralUpdate> updates, double nowS)
        {
            Arrived(nowS);
            foreach (EphemeralUpdate update in updates)
            {
                latest[update.ParticipantId + "\n" + update.Channel] = update;
                if (Timeline != null) Timeline.OnEphemeral(update);
                if (EphemeralReceived != null) EphemeralReceived(update);
            }
        }

        void ResetTo(SessionSnapshot snapshot)
        {
            State = SessionState.FromSnapshot(snapshot);
            if (Timeline != null) Timeline.Reset(State, snapshot.TNs);
            if (Reset != null) Reset(State, snapshot.TNs);
        }

        /// <summary>The stream ended (cleanly, with an error, or because of a Gap). Returns
        /// the wait in seconds before joining again. Throws when the error is not worth a
        /// retry (<paramref name="retryable"/> false: a refused token, a session that is
        /// gone) or after more than RetryPolicy.Attempts breaks in a row.</summary>
        public double StreamBroken(bool retryable, string reason)
        {
            if (!string.IsNullOrEmpty(reason)) Note("stream: " + reason);
            if (!retryable) throw new HoloBridgeException("the session stream failed: " + reason);
            failures += 1;
            if (failures > retry.Attempts)
            {
                throw new SessionGaveUpException("gave up after " + failures + " reconnects in a row: " + reason, failures);
            }
            Reconnects += 1;
            return retry.DelayS(failures);
        }

        /// <summary>How long to wait before the next heartbeat check: the interval times
        /// 0.8 + 0.2 <paramref name="uniform01"/> (a random number in [0, 1]).</summary>
        public double HeartbeatWaitS(double uniform01)
        {
            return HeartbeatIntervalS * (0.8 + 0.2 * uniform01);
        }

        /// <summary>Whether a check at <paramref name="nowS"/> sends a heartbeat: once
        /// accepted, unless the stream spoke within the interval and this participant is
        /// present.</summary>
        public bool HeartbeatDue(double nowS)
        {
            if (!IsAccepted) return false;
            bool flowing = nowS - lastMessageS < HeartbeatIntervalS;
            Participant me = State.Participants.Get(ParticipantId);
            return !(flowing && me != null && me.Present);
        }

        void Note(string error)
        {
            errors.Add(error);
            if (errors.Count > MaxErrors) errors.RemoveAt(0);
        }
    }
}

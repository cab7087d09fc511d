// One durable event of a session, as a client receives it (holo/session/state.py Event;
// holo/wire/session.py event_from_message decodes one from holo.v1.SessionEvent). The
// kinds keep the Python names ("model_loaded"), so the shared vectors and logs read the
// same on both sides.
using System;

namespace Holo.Bridge.Core
{
    /// <summary>Durable event kinds (holo/session/state.py DURABLE_KINDS).</summary>
    public static class EventKinds
    {
        public const string Joined = "joined";
        public const string Left = "left";
        public const string Away = "away";
        public const string Back = "back";
        public const string ModelLoaded = "model_loaded";
        public const string AnchorCommitted = "anchor_committed";
        public const string AnnotationAdded = "annotation_added";
        public const string AnnotationRemoved = "annotation_removed";
        public const string TelestrationAdded = "telestration_added";
        public const string ControlRequested = "control_requested";
        public const string ControlGranted = "control_granted";
        public const string ControlRevoked = "control_revoked";

        /// <summary>Kinds whose payload is one participant id (PARTICIPANT_KINDS).</summary>
        public static bool IsParticipantKind(string kind)
        {
            return kind == Left || kind == Away || kind == Back
                || kind == ControlRequested || kind == ControlGranted || kind == ControlRevoked;
        }

        public static readonly string[] All =
        {
            Joined, Left, Away, Back, ModelLoaded, AnchorCommitted, AnnotationAdded,
            AnnotationRemoved, TelestrationAdded, ControlRequested, ControlGranted, ControlRevoked,
        };
    }

    /// <summary>One durable event: <see cref="Seq"/> (gap-free from 1), session-clock
    /// <see cref="TNs"/>, the <see cref="Actor"/>, the <see cref="Kind"/> and one payload:
    /// a participant (joined), a model (model_loaded, anchor_committed), an annotation, a
    /// telestration, or an id (a participant's for the participant kinds, an annotation's or
    /// telestration's for annotation_removed). Build one with the factory methods.</summary>
    public sealed class SessionEvent
    {
        public long Seq { get; private set; }
        public long TNs { get; private set; }
        public string Actor { get; private set; }
        public string Kind { get; private set; }
        public Participant Participant { get; private set; }
        public SceneModel Model { get; private set; }
        public Annotation Annotation { get; private set; }
        public Telestration Telestration { get; private set; }
        /// <summary>The participant id of a participant kind; the annotation id of
        /// annotation_removed; null otherwise.</summary>
        public string Id { get; private set; }

        SessionEvent(long seq, long tNs, string actor, string kind)
        {
            Seq = seq;
            TNs = tNs;
            Actor = actor ?? "";
            Kind = kind;
        }

        public static SessionEvent Joined(long seq, long tNs, string actor, Participant participant)
        {
            if (participant == null) throw new ArgumentNullException("participant");
            return new SessionEvent(seq, tNs, actor, EventKinds.Joined) { Participant = participant };
        }

        /// <summary>left, away, back, control_requested, control_granted, control_revoked.</summary>
        public static SessionEvent ForParticipant(string kind, long seq, long tNs, string actor, string participantId)
        {
            if (!EventKinds.IsParticipantKind(kind))
            {
                throw new ArgumentException("'" + kind + "' is not an event about one participant", "kind");
            }
            return new SessionEvent(seq, tNs, actor, kind) { Id = participantId ?? "" };
        }

        /// <summary>model_loaded or anchor_committed.</summary>
        public static SessionEvent ForModel(string kind, long seq, long tNs, string actor, SceneModel model)
        {
            if (kind != EventKinds.ModelLoaded && kind != EventKinds.AnchorCommitted)
            {
                throw new ArgumentException("'" + kind + "' is not model_loaded or anchor_committed", "kind");
            }
            if (model == null) throw new ArgumentNullException("model");
            return new SessionEvent(seq, tNs, actor, kind) { Model = model };
        }

        public static SessionEvent AnnotationAdded(long seq, long tNs, string actor, Annotation annotation)
        {
            if (annotation == null) throw new ArgumentNullException("annotation");
            return new SessionEvent(seq, tNs, actor, EventKinds.AnnotationAdded) { Annotation = annotation };
        }

        public static SessionEvent AnnotationRemoved(long seq, long tNs, string actor, string annotationId)
        {
            return new SessionEvent(seq, tNs, actor, EventKinds.AnnotationRemoved) { Id = annotationId ?? "" };
        }

        public static SessionEvent TelestrationAdded(long seq, long tNs, string actor, Telestration telestration)
        {
            if (telestration == null) throw new ArgumentNullException("telestration");
            return new SessionEvent(seq, tNs, actor, EventKinds.TelestrationAdded) { Telestration = telestration };
        }

        /// <summary>An event of a kind this build does not know (a newer server's): the fold
        /// refuses it with a message saying to update the client.</summary>
        public static SessionEvent Unknown(long seq, long tNs, string actor, string kind)
        {
            return new SessionEvent(seq, tNs, actor, kind ?? "");
        }

        /// <summary>The participant a membership or control event is about.</summary>
        public string ParticipantId()
        {
            return Participant != null ? Participant.ParticipantId : (Id ?? "");
        }

        public override string ToString() { return "event " + Kind + " at seq " + Seq; }
    }
}

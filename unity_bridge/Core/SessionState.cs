// A session's state at a seq, as a client holds it (holo/session/state.py SessionState),
// and the snapshot a server sends to start one from (holo.v1.SessionSnapshot; holo/wire/
// session.py state_from_snapshot).
using System.Collections.Generic;

namespace Holo.Bridge.Core
{
    /// <summary>The state at <see cref="Seq"/>. Collections keep the order things appeared
    /// in (see OrderedMap.cs). Telestrations share their ids with annotations.</summary>
    public sealed class SessionState
    {
        public long Seq;
        public OrderedMap<Participant> Participants = new OrderedMap<Participant>();
        public OrderedMap<SceneModel> Models = new OrderedMap<SceneModel>();
        public OrderedMap<Annotation> Annotations = new OrderedMap<Annotation>();
        /// <summary>Who is in control ("" for nobody): loads and moves holograms.</summary>
        public string Controller = "";
        /// <summary>Participants who asked for control, oldest first.</summary>
        public List<string> ControlRequests = new List<string>();
        public OrderedMap<Telestration> Telestrations = new OrderedMap<Telestration>();

        /// <summary>A full copy: the records are immutable, so copying the containers is
        /// enough (as SessionState.copy in Python).</summary>
        public SessionState Copy()
        {
            return new SessionState
            {
                Seq = Seq,
                Participants = Participants.Copy(),
                Models = Models.Copy(),
                Annotations = Annotations.Copy(),
                Controller = Controller,
                ControlRequests = new List<string>(ControlRequests),
                Telestrations = Telestrations.Copy(),
            };
        }

        /// <summary>The role of a participant; "" when it is not in the session.</summary>
        public string RoleOf(string participantId)
        {
            Participant p = Participants.Get(participantId ?? "");
            return p == null ? "" : p.Role;
        }

        /// <summary>The state a snapshot describes. Later entries with the same id replace
        /// earlier ones in their place, as a Python dict built from the list would.</summary>
        public static SessionState FromSnapshot(SessionSnapshot snapshot)
        {
            var state = new SessionState { Seq = snapshot.Seq, Controller = snapshot.Controller ?? "" };
            foreach (Participant p in snapshot.Participants) state.Participants.Set(p.ParticipantId, p);
            foreach (SceneModel m in snapshot.Models) state.Models.Set(m.ModelId, m);
            foreach (Annotation a in snapshot.Annotations) state.Annotations.Set(a.AnnotationId, a);
            state.ControlRequests = new List<string>(snapshot.ControlRequests);
            foreach (Telestration t in snapshot.Telestrations) state.Telestrations.Set(t.TelestrationId, t);
            return state;
        }
    }

    /// <summary>The state as sent at session time <see cref="TNs"/>: a late joiner's start,
    /// a resync after a client fell behind. Lists in the state's order.</summary>
    public sealed class SessionSnapshot
    {
        public long Seq;
        public long TNs;
        public List<Participant> Participants = new List<Participant>();
        public List<SceneModel> Models = new List<SceneModel>();
        public List<Annotation> Annotations = new List<Annotation>();
        public string Controller = "";
        public List<string> ControlRequests = new List<string>();
        public List<Telestration> Telestrations = new List<Telestration>();
    }
}

// The session state as the fold of its durable events: the same fold as the server's, the
// Python SDK's and the web page's (holo/session/state.py apply; holo/web/src/fold.js).
// tests/vectors/session_fold.json holds events and the states they fold to; all of them
// are checked against it, this one by unity_bridge/Tests/SessionFoldVectorTests.cs.
//
// The fold is deterministic and total over valid logs, so every client that applies the
// same events in the same order holds the same state. Each branch below is the Python one,
// in the same order; where the Python uses dict and list operations, OrderedMap and List
// do the same (see OrderedMap.cs on order).
namespace Holo.Bridge.Core
{
    public static class SessionFold
    {
        /// <summary>Fold one event into <paramref name="state"/> (in place). Its seq must be
        /// state.Seq + 1; an unknown or malformed event is refused (a SessionException) and
        /// leaves the state as it was.</summary>
        public static void Apply(SessionState state, SessionEvent e)
        {
            if (e.Seq != state.Seq + 1)
            {
                throw new SessionException("event seq " + e.Seq + " does not follow state seq " + state.Seq);
            }
            string kind = e.Kind;
            if (kind == EventKinds.Joined && e.Participant != null)
            {
                Participant p = e.Participant;
                state.Participants.Set(p.ParticipantId, p);
                if (state.Controller == "" && p.Role == Roles.Presenter) state.Controller = p.ParticipantId;
            }
            else if (kind == EventKinds.Left || kind == EventKinds.Away || kind == EventKinds.Back)
            {
                string pid = e.ParticipantId();
                if (kind == EventKinds.Left)
                {
                    state.Participants.Remove(pid);
                }
                else
                {
                    Participant known = state.Participants.Get(pid);
                    if (known != null) state.Participants.Set(pid, known.WithPresent(kind == EventKinds.Back));
                }
                if (kind != EventKinds.Back)
                {
                    state.ControlRequests.Remove(pid);
                    // Control falls back to a presenter still here.
                    if (state.Controller == pid) state.Controller = FirstPresentPresenter(state);
                }
                else if (state.Controller == "" && state.RoleOf(pid) == Roles.Presenter)
                {
                    state.Controller = pid;
                }
            }
            else if ((kind == EventKinds.ModelLoaded || kind == EventKinds.AnchorCommitted) && e.Model != null)
            {
                state.Models.Set(e.Model.ModelId, e.Model);
            }
            else if (kind == EventKinds.AnnotationAdded && e.Annotation != null)
            {
                state.Annotations.Set(e.Annotation.AnnotationId, e.Annotation);
            }
            else if (kind == EventKinds.AnnotationRemoved && e.Id != null)
            {
                state.Annotations.Remove(e.Id);
                state.Telestrations.Remove(e.Id);
            }
            else if (kind == EventKinds.TelestrationAdded && e.Telestration != null)
            {
                state.Telestrations.Set(e.Telestration.TelestrationId, e.Telestration);
            }
            else if (kind == EventKinds.ControlRequested)
            {
                string pid = e.ParticipantId();
                if (!state.ControlRequests.Contains(pid)) state.ControlRequests.Add(pid);
            }
            else if (kind == EventKinds.ControlGranted)
            {
                string pid = e.ParticipantId();
                state.Controller = pid;
                state.ControlRequests.Remove(pid);
            }
            else if (kind == EventKinds.ControlRevoked)
            {
                if (state.Controller == e.ParticipantId())
                {
                    state.Controller = state.RoleOf(e.Actor) == Roles.Presenter ? e.Actor : "";
                    if (state.Controller == "") state.Controller = FirstPresentPresenter(state);
                }
            }
            else
            {
                throw new SessionException(
                    "event '" + kind + "' at seq " + e.Seq + " is unknown or malformed; if the server is newer, update the client");
            }
            state.Seq = e.Seq;
        }

        static string FirstPresentPresenter(SessionState state)
        {
            foreach (Participant p in state.Participants.Values)
            {
                if (p.Role == Roles.Presenter && p.Present) return p.ParticipantId;
            }
            return "";
        }
    }
}

// The session as of any recent moment, to show a video frame with the holograms of its
// time: the same buffer as the Python SDK's (holo/client/timeline.py SessionTimeline,
// StateAt, fold_at_time).
//
// A viewer renders frame t with the state as of t: the anchor poses committed, annotations
// and telestrations made at or before t, and each participant's newest ephemeral value
// (live drag, pointer, head pose) at or before t. Events reach a client in seq order, but
// a client may stamp an intent up to 1 s in the past (holo/session/clock.py
// MAX_BACKDATE_NS), so a later seq can carry an earlier t_ns: the timeline keeps events
// sorted by (t_ns, seq) and folds them in that order. The state after each kept event is
// computed when first asked for, and again from where a late-stamped event was inserted.
// What is older than the horizon (10 s) is folded into the base state and dropped.
using System;
using System.Collections.Generic;

namespace Holo.Bridge.Core
{
    /// <summary>The session as of <see cref="TNs"/>: the durable state and the ephemeral
    /// values in effect. <see cref="Exact"/> is false for a moment before what the timeline
    /// knows (before the snapshot it started from, or older than its horizon): the state is
    /// then the oldest it holds.</summary>
    public sealed class StateAt
    {
        public long TNs { get; private set; }
        public SessionState State { get; private set; }
        /// <summary>The newest update at or before TNs per (participant, channel), in the
        /// order the timeline first saw each channel.</summary>
        public IList<EphemeralUpdate> Ephemeral { get; private set; }
        public bool Exact { get; private set; }

        public StateAt(long tNs, SessionState state, IList<EphemeralUpdate> ephemeral, bool exact)
        {
            TNs = tNs;
            State = state;
            Ephemeral = ephemeral;
            Exact = exact;
        }

        /// <summary>The newest value of one participant's channel at this moment, or null.</summary>
        public EphemeralUpdate Latest(string participantId, string channel)
        {
            foreach (EphemeralUpdate u in Ephemeral)
            {
                if (u.ParticipantId == participantId && u.Channel == channel) return u;
            }
            return null;
        }

        /// <summary>Where the model is shown at this moment: a live drag in progress (newer
        /// than the last commit) wins over the committed pose; null if neither exists. Of
        /// several participants' drags the newest counts (the first seen on a tie, as
        /// Python's max).</summary>
        public Pose? AnchorPose(string modelId)
        {
            SceneModel committed = State.Models.Get(modelId);
            EphemeralUpdate drag = null;
            foreach (EphemeralUpdate u in Ephemeral)
            {
                if (u.Channel == Channels.Drag && u.Drag != null && u.Drag.ModelId == modelId && (drag == null || u.TNs > drag.TNs))
                {
                    drag = u;
                }
            }
            long committedAt = committed == null ? 0 : committed.TNs;
            if (drag != null && drag.TNs > committedAt) return drag.Drag.AnchorPose;
            return committed == null ? (Pose?)null : committed.AnchorPose;
        }
    }

    public sealed class SessionTimeline
    {
        struct Key
        {
            public readonly long TNs, Seq;

            public Key(long tNs, long seq)
            {
                TNs = tNs;
                Seq = seq;
            }

            public int CompareTo(Key other)
            {
                int c = TNs.CompareTo(other.TNs);
                return c != 0 ? c : Seq.CompareTo(other.Seq);
            }
        }

        readonly List<Key> keys = new List<Key>(); // (t_ns, seq), sorted
        readonly List<SessionEvent> events = new List<SessionEvent>(); // in that order
        readonly List<SessionState> states = new List<SessionState>(); // the state after events[k]
        SessionState baseState = new SessionState(); // the state before the first kept event
        long baseT; // the base is the state as of this time (and later, until events)
        // (participant, channel) -> its updates, oldest first; a list of keys keeps the order
        // channels were first seen (Python's dict order).
        readonly Dictionary<string, List<EphemeralUpdate>> ephemeral = new Dictionary<string, List<EphemeralUpdate>>();
        readonly List<string> channelOrder = new List<string>();

        /// <param name="horizonNs">How much session time is kept (10 s, as the SDK).</param>
        public SessionTimeline(long horizonNs = 10000000000L)
        {
            HorizonNs = horizonNs;
        }

        public long HorizonNs { get; private set; }

        /// <summary>Start again from <paramref name="state"/>, the state as of session time
        /// <paramref name="tNs"/> (a snapshot's).</summary>
        public void Reset(SessionState state, long tNs = 0)
        {
            baseT = tNs;
            keys.Clear();
            events.Clear();
            states.Clear();
            baseState = state.Copy();
            ephemeral.Clear();
            channelOrder.Clear();
        }

        /// <summary>An event as the client applied it (in seq order; the timeline re-orders).</summary>
        public void OnEvent(SessionEvent e)
        {
            var key = new Key(e.TNs, e.Seq);
            int k = BisectRight(key);
            keys.Insert(k, key);
            events.Insert(k, e);
            if (k < states.Count) states.RemoveRange(k, states.Count - k); // computed again from here
            Prune(keys[keys.Count - 1].TNs);
        }

        public void OnEphemeral(EphemeralUpdate update)
        {
            string key = update.ParticipantId + "\n" + update.Channel;
            List<EphemeralUpdate> history;
            if (!ephemeral.TryGetValue(key, out history))
            {
                history = new List<EphemeralUpdate>();
                ephemeral[key] = history;
                channelOrder.Add(key);
            }
            // An older value than one held: latest-value channels skip it.
            if (history.Count > 0 && update.TNs < history[history.Count - 1].TNs) return;
            history.Add(update);
            while (history.Count > 1 && history[1].TNs <= update.TNs - HorizonNs) history.RemoveAt(0);
        }

        // Python's bisect on the sorted (t_ns, seq) keys.
        int BisectRight(Key key)
        {
            int lo = 0, hi = keys.Count;
            while (lo < hi)
            {
                int mid = (lo + hi) / 2;
                if (key.CompareTo(keys[mid]) < 0) hi = mid; else lo = mid + 1;
            }
            return lo;
        }

        /// <summary>How many kept events are stamped at or before tNs (bisect_right of
        /// (t, 2^63): every seq is below it).</summary>
        int CountAtOrBefore(long tNs)
        {
            int lo = 0, hi = keys.Count;
            while (lo < hi)
            {
                int mid = (lo + hi) / 2;
                if (tNs < keys[mid].TNs) hi = mid; else lo = mid + 1;
            }
            return lo;
        }

        /// <summary>How many kept events are stamped before tNs (bisect_left of (t, 0)).</summary>
        int CountBefore(long tNs)
        {
            int lo = 0, hi = keys.Count;
            while (lo < hi)
            {
                int mid = (lo + hi) / 2;
                if (keys[mid].TNs < tNs) lo = mid + 1; else hi = mid;
            }
            return lo;
        }

        /// <summary>The state after the first k kept events (time order).</summary>
        SessionState StateAfter(int k)
        {
            while (states.Count < k)
            {
                int n = states.Count;
                SessionState state = (n > 0 ? states[n - 1] : baseState).Copy();
                FoldAtTime(state, events[n]);
                states.Add(state);
            }
            return k > 0 ? states[k - 1] : baseState;
        }

        /// <summary>Fold an event in time order rather than seq order; the fold's rules
        /// tolerate it. The commit time of each model is kept with its pose.</summary>
        public static void FoldAtTime(SessionState state, SessionEvent e)
        {
            state.Seq = e.Seq - 1;
            SessionFold.Apply(state, e);
            if (e.Model != null)
            {
                string modelId = e.Model.ModelId;
                state.Models.Set(modelId, state.Models.Get(modelId).WithTNs(e.TNs));
            }
        }

        void Prune(long newest)
        {
            int keepFrom = CountBefore(newest - HorizonNs);
            // As in Python: pruned only when more than one event is past the horizon.
            if (keepFrom > 1)
            {
                baseState = StateAfter(keepFrom);
                baseT = Math.Max(baseT, keys[keepFrom - 1].TNs);
                keys.RemoveRange(0, keepFrom);
                events.RemoveRange(0, keepFrom);
                states.RemoveRange(0, Math.Min(keepFrom, states.Count));
            }
        }

        /// <summary>The session as of <paramref name="tNs"/> (events and values stamped at
        /// or before it). The state returned is the timeline's own: do not change it.</summary>
        public StateAt StateAtTime(long tNs)
        {
            SessionState state = StateAfter(CountAtOrBefore(tNs));
            var values = new List<EphemeralUpdate>();
            foreach (string key in channelOrder)
            {
                EphemeralUpdate at = null;
                foreach (EphemeralUpdate u in ephemeral[key])
                {
                    if (u.TNs <= tNs) at = u;
                }
                if (at != null) values.Add(at);
            }
            return new StateAt(tNs, state, values.AsReadOnly(), tNs >= baseT);
        }
    }
}

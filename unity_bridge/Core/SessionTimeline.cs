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
//
// Ephemeral values come to observers at a capped rate (the server's 15 Hz, fewer than the
// video's frames): between two values of a channel that bracket the moment asked for, at
// most MaxGapNs apart, the value is interpolated (positions and ray directions linearly,
// rotations by normalised lerp the short way round), so a hologram moves on every frame
// instead of in steps; values further apart (a pause, a lost link) are held, and so is
// the newest. The arithmetic is Python's (holo.client.timeline.interpolate), operation
// for operation, so the three clients agree to the last bit (tests/vectors/timeline.json).
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
        /// order the timeline first saw each channel; its value interpolated towards the
        /// next update when that brackets TNs closely (the update keeps its own TNs).</summary>
        public IList<EphemeralUpdate> Ephemeral { get; private set; }
        public bool Exact { get; private set; }

        public StateAt(long tNs, SessionState state, IList<EphemeralUpdate> ephemeral, bool exact)
        {
            TNs = tNs;
            State = state;
            Ephemeral = ephemeral;
            Exact = exact;
        }

        /// <summary>The value of one participant's channel at this moment (see
        /// <see cref="Ephemeral"/>), or null.</summary>
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

        /// <summary>Values further apart than this are held, not interpolated: 250 ms,
        /// nearly four intervals of the observers' 15 Hz values, far beyond those of a
        /// source that is moving (the SDK's max_gap_ns).</summary>
        public const long DefaultMaxGapNs = 250000000L;

        /// <param name="horizonNs">How much session time is kept (10 s, as the SDK).</param>
        /// <param name="interpolate">Interpolate between values (false: hold the newest).</param>
        /// <param name="maxGapNs">Values further apart are held.</param>
        public SessionTimeline(long horizonNs = 10000000000L, bool interpolate = true, long maxGapNs = DefaultMaxGapNs)
        {
            HorizonNs = horizonNs;
            Interpolate = interpolate;
            MaxGapNs = maxGapNs;
        }

        public long HorizonNs { get; private set; }
        /// <summary>Whether <see cref="StateAtTime"/> interpolates between two ephemeral values
        /// at most <see cref="MaxGapNs"/> apart (false: the older value is held).</summary>
        public bool Interpolate { get; set; }
        public long MaxGapNs { get; set; }

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
                List<EphemeralUpdate> history = ephemeral[key];
                int k = UpdatesAtOrBefore(history, tNs);
                if (k > 0) values.Add(ValueAt(history, k, tNs));
            }
            return new StateAt(tNs, state, values.AsReadOnly(), tNs >= baseT);
        }

        /// <summary>How many of a channel's updates (in time order) are stamped at or before
        /// tNs (Python's bisect_right).</summary>
        static int UpdatesAtOrBefore(List<EphemeralUpdate> history, long tNs)
        {
            int lo = 0, hi = history.Count;
            while (lo < hi)
            {
                int mid = (lo + hi) / 2;
                if (tNs < history[mid].TNs) hi = mid; else lo = mid + 1;
            }
            return lo;
        }

        /// <summary>The value in effect at tNs: history[k - 1] (the newest at or before it),
        /// interpolated towards history[k] when that one brackets tNs closely. It keeps the
        /// older update's TNs, which decides whether a drag shows instead of a commit
        /// (<see cref="StateAt.AnchorPose"/>) exactly as without interpolation.</summary>
        EphemeralUpdate ValueAt(List<EphemeralUpdate> history, int k, long tNs)
        {
            EphemeralUpdate older = history[k - 1];
            if (!Interpolate || k == history.Count || older.TNs == tNs) return older;
            EphemeralUpdate newer = history[k];
            long gap = newer.TNs - older.TNs;
            if (gap > MaxGapNs) return older;
            // Both below 2^53: exact as doubles, so the quotient is rounded once, as Python's
            // int / int is.
            return Between(older, newer, (double)(tNs - older.TNs) / (double)gap);
        }

        /// <summary>The update a fraction <paramref name="f"/> (0..1) of the way from
        /// <paramref name="older"/> to <paramref name="newer"/>, with the older one's
        /// participant, channel and time. Head poses: position linearly, rotation by
        /// normalised lerp (within 0.5 % of a slerp's angle for the under-20 degree turns
        /// between a headset's values 66 ms apart). A drag interpolates its anchor pose when
        /// both are of the same model. A pointer: origin and direction linearly. Anything
        /// else (different channels or models, heartbeats, directions that would cancel
        /// out): <paramref name="older"/> itself, held.</summary>
        public static EphemeralUpdate Between(EphemeralUpdate older, EphemeralUpdate newer, double f)
        {
            if (older.Channel != newer.Channel) return older;
            switch (older.Channel)
            {
                case Channels.HeadPose:
                    return EphemeralUpdate.ForHeadPose(older.ParticipantId, older.TNs, PoseBetween(older.HeadPose, newer.HeadPose, f));
                case Channels.Drag:
                    if (older.Drag.ModelId != newer.Drag.ModelId) return older;
                    Pose anchor = PoseBetween(older.Drag.AnchorPose, newer.Drag.AnchorPose, f);
                    return EphemeralUpdate.ForDrag(older.ParticipantId, older.TNs, new SceneModel(older.Drag.ModelId, anchor, older.Drag.TNs));
                case Channels.Pointer:
                    Vec3 direction = Lerp(older.Pointer.Direction, newer.Pointer.Direction, f);
                    if (Math.Max(Math.Max(Math.Abs(direction.X), Math.Abs(direction.Y)), Math.Abs(direction.Z)) < 1e-9) return older;
                    return EphemeralUpdate.ForPointer(older.ParticipantId, older.TNs, new Ray(Lerp(older.Pointer.Origin, newer.Pointer.Origin, f), direction));
                default:
                    return older;
            }
        }

        // The operations below are holo.client.timeline's _lerp and _pose_between, in the
        // same order: x + (y - x) * f per component; the dot product and the squared norm
        // summed left to right.
        static double Lerp(double a, double b, double f) { return a + (b - a) * f; }

        static Vec3 Lerp(Vec3 a, Vec3 b, double f)
        {
            return new Vec3(Lerp(a.X, b.X, f), Lerp(a.Y, b.Y, f), Lerp(a.Z, b.Z, f));
        }

        static Pose PoseBetween(Pose a, Pose b, double f)
        {
            Quat qa = a.Rotation, qb = b.Rotation;
            if (qa.X * qb.X + qa.Y * qb.Y + qa.Z * qb.Z + qa.W * qb.W < 0)
            {
                qb = new Quat(-qb.X, -qb.Y, -qb.Z, -qb.W); // the same rotation, the short way round
            }
            double x = Lerp(qa.X, qb.X, f), y = Lerp(qa.Y, qb.Y, f), z = Lerp(qa.Z, qb.Z, f), w = Lerp(qa.W, qb.W, f);
            double norm = Math.Sqrt(x * x + y * y + z * z + w * w);
            return new Pose(Lerp(a.Position, b.Position, f), new Quat(x / norm, y / norm, z / norm, w / norm));
        }
    }
}

// A jitter buffer pairing video frames with the session state of their moment (holo/
// client/timeline.py FrameSync). Events reach a viewer a little after they happen, so each
// frame is held back by DelayNs (250 ms) on the session clock before it is paired with
// SessionTimeline.StateAtTime(frame t): an event stamped at or before t has then arrived.
// The server refuses intents stamped more than 1 s in the past, so a delay a little above
// the delivery latency suffices for events the server stamps, and one above 1 s for any.
using System;
using System.Collections.Generic;

namespace Holo.Bridge.Core
{
    public sealed class FrameSync<TFrame>
    {
        readonly Func<TFrame, long> timeOf;
        readonly Queue<TFrame> frames = new Queue<TFrame>();
        readonly int maxFrames;

        /// <param name="timeOf">A frame's session time (ns).</param>
        /// <param name="maxFrames">Frames held at most (300: 10 s at 30 fps); older ones are
        /// dropped when a renderer stops asking.</param>
        public FrameSync(SessionTimeline timeline, Func<TFrame, long> timeOf, long delayNs = 250000000L, int maxFrames = 300)
        {
            Timeline = timeline;
            this.timeOf = timeOf;
            DelayNs = delayNs;
            this.maxFrames = maxFrames;
        }

        public SessionTimeline Timeline { get; private set; }
        public long DelayNs { get; set; }
        /// <summary>Frames dropped because more than maxFrames were held.</summary>
        public int Dropped { get; private set; }
        public int Count { get { return frames.Count; } }

        public void Push(TFrame frame)
        {
            frames.Enqueue(frame);
            while (frames.Count > maxFrames)
            {
                frames.Dequeue();
                Dropped += 1;
            }
        }

        /// <summary>The frames whose time + DelayNs has passed at session time
        /// <paramref name="nowNs"/>, in order, each with the state as of its time.</summary>
        public List<KeyValuePair<TFrame, StateAt>> Ready(long nowNs)
        {
            return Take(nowNs, false);
        }

        /// <summary>Every held frame now, whatever the clock says (the end of a stream).</summary>
        public List<KeyValuePair<TFrame, StateAt>> Drain() { return Take(0, true); }

        List<KeyValuePair<TFrame, StateAt>> Take(long nowNs, bool all)
        {
            var ready = new List<KeyValuePair<TFrame, StateAt>>();
            // t + delay <= now, written so that neither side overflows near long.MaxValue.
            while (frames.Count > 0 && (all || timeOf(frames.Peek()) <= nowNs - DelayNs))
            {
                TFrame frame = frames.Dequeue();
                ready.Add(new KeyValuePair<TFrame, StateAt>(frame, Timeline.StateAtTime(timeOf(frame))));
            }
            return ready;
        }

        public void Clear() { frames.Clear(); }
    }
}

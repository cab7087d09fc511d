// What a headset sends of what it tracks, and when: the decisions of the web page's
// `Paced` and `moved()` (holo/web/src/immersive.js), here without a clock or a timer, so
// the Unity layer drives them once a frame and the tests drive them with made-up times.
//
// Rate: at most N calls a second (30 for head poses and drags: the session keeps each
// participant's newest value only, and observers get them at 15 Hz and interpolate,
// holo/session/live.py; sending faster costs battery and bandwidth for nothing). One call in flight: on a slow
// link values are dropped, never queued, and the newest waiting value is the one that goes
// (a lost one is replaced by the next). The value sent is the newest at the moment of
// sending, not at the moment the wait began.
//
// Still: a still head jitters by about 0.1 mm, so a pose within 1 mm and 0.2 degrees of
// the last one accepted is tracking noise and is not offered again (the page's STILL_M and
// STILL_RAD). The reference is the last value accepted, not the last frame's, so a slow
// drift still goes out once it adds up to a millimetre.
//
// Settle: a drag ends with CommitAnchor. The value waiting is dropped, and the caller waits
// for the call in flight before it commits, so no drag arrives after the commit and pulls
// the model back where it was a moment before.
using System;

namespace Holo.Bridge.Core
{
    /// <summary>Whether two poses or rays differ by more than tracking noise.</summary>
    public static class Stillness
    {
        /// <summary>Positions closer than this (metres) are the same place.</summary>
        public const double Metres = 0.001;
        /// <summary>Rotations or directions closer than this (degrees) are the same.</summary>
        public const double Degrees = 0.2;
        /// <summary><see cref="Degrees"/> in radians.</summary>
        public static readonly double Radians = Degrees * Math.PI / 180.0;

        /// <summary>True when <paramref name="b"/> is more than 1 mm or 0.2 degrees from
        /// <paramref name="a"/> (any frame; both in the same one).</summary>
        public static bool Moved(Pose a, Pose b)
        {
            return (b.Position - a.Position).Length > Metres || Turn(a.Rotation, b.Rotation) > Radians;
        }

        /// <summary>The angle (radians) between two rotations, from the relative rotation
        /// a* b as 2 atan2(|xyz|, |w|): accurate for the small angles that matter here (acos
        /// of a dot near 1 is not), and blind to the norm (Unity's float quaternions are
        /// unit to about 1e-7 only, which acos would read as 0.03 degrees).</summary>
        static double Turn(Quat a, Quat b)
        {
            Quat r = a.Conjugate() * b;
            return 2.0 * Math.Atan2(Math.Sqrt(r.X * r.X + r.Y * r.Y + r.Z * r.Z), Math.Abs(r.W));
        }

        /// <summary>True when the origin moved more than 1 mm or the direction turned more
        /// than 0.2 degrees (directions need not be unit length).</summary>
        public static bool Moved(Ray a, Ray b)
        {
            if ((b.Origin - a.Origin).Length > Metres) return true;
            double lengths = a.Direction.Length * b.Direction.Length;
            if (lengths == 0) return !a.Direction.Equals(b.Direction);
            // atan2 of |a x b| and a . b: accurate for small angles, where acos of the dot is not.
            double angle = Math.Atan2(Vec3.Cross(a.Direction, b.Direction).Length, Vec3.Dot(a.Direction, b.Direction));
            return angle > Radians;
        }

        public static bool Still(Pose a, Pose b) { return !Moved(a, b); }

        public static bool Still(Ray a, Ray b) { return !Moved(a, b); }
    }

    /// <summary>Sends the newest value at most <see cref="MaxPerSecond"/> times a second,
    /// one call at a time. Times are seconds on any steady clock the caller chooses.</summary>
    /// <example>Once a frame:
    /// <code>
    /// pacer.Offer(pose);
    /// Pose value;
    /// if (pacer.TryTake(now, out value)) Send(value); // and pacer.Done() when the call ends
    /// </code></example>
    public sealed class Pacer<T>
    {
        readonly Func<T, T, bool> still;
        double maxPerSecond;
        double lastTaken = double.NegativeInfinity;
        T value;
        T accepted;
        bool hasAccepted;

        /// <param name="maxPerSecond">Calls a second at most (positive).</param>
        /// <param name="still">True when a value is the same as the last one accepted, so
        /// not worth sending (<see cref="Stillness.Still(Pose, Pose)"/>); null: every value
        /// offered counts.</param>
        public Pacer(double maxPerSecond, Func<T, T, bool> still = null)
        {
            MaxPerSecond = maxPerSecond;
            this.still = still;
        }

        public double MaxPerSecond
        {
            get { return maxPerSecond; }
            set
            {
                if (!(value > 0) || double.IsInfinity(value))
                {
                    throw new ArgumentOutOfRangeException("value", value, "a pacer sends a positive, finite number of calls a second (30 for head poses and drags)");
                }
                maxPerSecond = value;
            }
        }

        /// <summary>A value waits to be sent.</summary>
        public bool Waiting { get; private set; }

        /// <summary>A call taken with <see cref="TryTake"/> has not reported <see cref="Done"/>.</summary>
        public bool InFlight { get; private set; }

        /// <summary>Values taken so far.</summary>
        public int Taken { get; private set; }

        /// <summary>Offers the value of now; it replaces any value still waiting. Returns
        /// false, and keeps nothing, when it is still (the same as the last one accepted).</summary>
        public bool Offer(T offered)
        {
            if (still != null && hasAccepted && still(accepted, offered)) return false;
            accepted = offered;
            hasAccepted = true;
            value = offered;
            Waiting = true;
            return true;
        }

        /// <summary>The value to send now, if one waits, no call is in flight and the last
        /// was taken at least 1 / <see cref="MaxPerSecond"/> seconds before
        /// <paramref name="now"/>. Taking starts a call: report its end with <see cref="Done"/>.</summary>
        public bool TryTake(double now, out T taken)
        {
            taken = default(T);
            if (!Waiting || InFlight || now - lastTaken < 1.0 / maxPerSecond) return false;
            taken = value;
            value = default(T);
            Waiting = false;
            InFlight = true;
            lastTaken = now;
            Taken += 1;
            return true;
        }

        /// <summary>How long (seconds) from <paramref name="now"/> until a waiting value may
        /// go, if no call is in flight then; 0 when it may go now.</summary>
        public double WaitS(double now)
        {
            return Math.Max(0.0, lastTaken + 1.0 / maxPerSecond - now);
        }

        /// <summary>The call taken last has ended, sent or failed (a failed value is not sent
        /// again: the next one replaces it).</summary>
        public void Done()
        {
            if (!InFlight) throw new InvalidOperationException("Done() without a call in flight: call it once for each value TryTake gave");
            InFlight = false;
        }

        /// <summary>Drops the value waiting (before a commit that ends a drag). Returns true
        /// when a call is still in flight: wait for it before committing. The last value
        /// accepted is forgotten too, so the next gesture's first value is never still.</summary>
        public bool Settle()
        {
            value = default(T);
            Waiting = false;
            accepted = default(T);
            hasAccepted = false;
            return InFlight;
        }
    }
}

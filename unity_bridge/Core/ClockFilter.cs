// The session clock as a client sees it: the same NTP-style filter as the Python SDK
// (holo/client/clock.py ClockSync) and the page (holo/web/src/clock.js).
//
// Each exchange gives four timestamps (RFC 5905, section 8): t1 and t4 on the client's own
// monotonic clock (send, receive), t2 and t3 on the session clock (the server's receive
// and send). A sample's error is at most half its round-trip delay (the two directions
// may be delayed unevenly), so the filter keeps the last Window samples (16) and averages
// the offsets of the Best (3) with the least delay: NTP's clock filter in small. A replay's
// clock runs at its speed (Rate) and jumps on a seek: every reply carries the rate and an
// epoch, and samples of an older epoch are dropped.
//
// Integer arithmetic as in Python: session times are near 1.8e18 ns, past what a double
// holds exactly (2^53 ~ 9e15), so midpoints and means stay in longs, with floor division
// (Python's //, which C#'s / is not for negative values) and without overflow (a sum of
// three such times would pass 2^63). Rounding is Python's round(): half to even, which is
// Math.Round's default.
using System;
using System.Collections.Generic;
using System.Linq;

namespace Holo.Bridge.Core
{
    /// <summary>One exchange. OffsetNs: session clock minus local clock at the local
    /// midpoint; DelayNs: the round trip less the server's own time.</summary>
    public struct ClockSample
    {
        public readonly long LocalMidNs;
        public readonly long SessionMidNs;
        public readonly long DelayNs;
        public readonly double Rate;
        public readonly ulong Epoch;

        public ClockSample(long localMidNs, long sessionMidNs, long delayNs, double rate, ulong epoch)
        {
            LocalMidNs = localMidNs;
            SessionMidNs = sessionMidNs;
            DelayNs = delayNs;
            Rate = rate;
            Epoch = epoch;
        }

        public long OffsetNs { get { return SessionMidNs - LocalMidNs; } }
    }

    public sealed class ClockFilter
    {
        readonly int window;
        readonly int best;
        readonly List<ClockSample> samples = new List<ClockSample>();

        /// <param name="window">Samples kept (16, as the SDK).</param>
        /// <param name="best">How many of the least-delayed are averaged (3).</param>
        public ClockFilter(int window = 16, int best = 3)
        {
            if (window < 1 || best < 1) throw new ArgumentException("window and best must be at least 1");
            this.window = window;
            this.best = best;
            Rate = 1.0;
        }

        public IList<ClockSample> Samples { get { return samples.AsReadOnly(); } }
        /// <summary>The clock's rate (1 live; a replay's speed; 0 paused).</summary>
        public double Rate { get; private set; }
        /// <summary>The epoch of the samples held; null before the first.</summary>
        public ulong? Epoch { get; private set; }
        public bool IsSynced { get { return samples.Count > 0; } }

        /// <summary>One exchange's timestamps (the transport checks the reply echoes t1); the
        /// sample joins the estimate, and a new epoch starts it afresh.</summary>
        public ClockSample Add(long t1, long t2, long t3, long t4, double rate, ulong epoch)
        {
            // The server's own time in session nanoseconds, as real time.
            double served = rate > 0 ? (t3 - t2) / rate : 0.0;
            long delay = (long)Math.Round((double)(t4 - t1) - served);
            var sample = new ClockSample(FloorMid(t1, t4), FloorMid(t2, t3), Math.Max(0, delay), rate, epoch);
            if (Epoch != epoch)
            {
                samples.Clear();
                Epoch = epoch;
            }
            Rate = rate;
            samples.Add(sample);
            if (samples.Count > window) samples.RemoveRange(0, samples.Count - window);
            return sample;
        }

        /// <summary>(a + b) // 2 without overflow: floor halves plus the floor of the two
        /// remainders' half.</summary>
        internal static long FloorMid(long a, long b)
        {
            return FloorDiv(a, 2) + FloorDiv(b, 2) + (FloorMod(a, 2) + FloorMod(b, 2)) / 2;
        }

        internal static long FloorDiv(long a, long b)
        {
            long q = a / b;
            if ((a % b != 0) && ((a < 0) != (b < 0))) q -= 1;
            return q;
        }

        static long FloorMod(long a, long b) { return a - FloorDiv(a, b) * b; }

        /// <summary>A (local, session) pair on the estimated line, from the least-delayed
        /// samples: each one's session time carried to the same local instant, then the
        /// mean (floor), taken as the first plus the mean of the differences so no sum
        /// overflows.</summary>
        void Reference(out long reference, out long session)
        {
            if (samples.Count == 0) throw new ClockException("the clock has not been synced; add a sample (ClockService.Sync) first");
            // OrderBy is stable, as Python's sorted: equal delays keep their arrival order.
            List<ClockSample> chosen = samples.OrderBy(s => s.DelayNs).Take(best).ToList();
            reference = chosen[0].LocalMidNs;
            long first = AtReference(chosen[0], reference);
            long differences = 0;
            foreach (ClockSample s in chosen) differences += AtReference(s, reference) - first;
            session = first + FloorDiv(differences, chosen.Count);
        }

        long AtReference(ClockSample s, long reference)
        {
            return s.SessionMidNs + (long)Math.Round(Rate * (double)(reference - s.LocalMidNs));
        }

        /// <summary>Session clock minus local clock (at rate 1; at the reference point otherwise).</summary>
        public long OffsetNs
        {
            get
            {
                long reference, session;
                Reference(out reference, out session);
                return session - reference;
            }
        }

        /// <summary>The least round-trip delay held: twice the bound on the estimate's error.</summary>
        public long DelayNs
        {
            get
            {
                long least = 0;
                for (int k = 0; k < samples.Count; k++) least = k == 0 ? samples[k].DelayNs : Math.Min(least, samples[k].DelayNs);
                return least;
            }
        }

        /// <summary>A local clock reading as session time.</summary>
        public long ToSession(long localNs)
        {
            long reference, session;
            Reference(out reference, out session);
            return session + (long)Math.Round(Rate * (double)(localNs - reference));
        }

        /// <summary>Session time as a local clock reading (the clock must run: rate > 0).</summary>
        public long ToLocal(long sessionNs)
        {
            long reference, session;
            Reference(out reference, out session);
            if (Rate <= 0) throw new ClockException("the session clock is paused; no local time maps to a session time");
            return reference + (long)Math.Round((double)(sessionNs - session) / Rate);
        }
    }
}

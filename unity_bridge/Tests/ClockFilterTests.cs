// ClockFilter.cs: the NTP-style filter, by its properties and against what the Python
// SDK's ClockSync said for the same exchanges (tests/vectors/clock_filter.json).
using System.Collections.Generic;
using NUnit.Framework;

namespace Holo.Bridge.Core.Tests
{
    [TestFixture]
    public class ClockFilterTests
    {
        const long Offset = 1780000000000000000L; // session minus local

        // One exchange: up and down are the one-way delays (ns), serve the server's time.
        static ClockSample Exchange(ClockFilter filter, long t1, long up, long serve, long down, double rate = 1.0, ulong epoch = 0)
        {
            long t2 = t1 + Offset + up;
            return filter.Add(t1, t2, t2 + serve, t1 + up + serve + down, rate, epoch);
        }

        [Test]
        public void ASymmetricExchangeGivesTheOffsetAndTheDelayLessTheServersTime()
        {
            var filter = new ClockFilter();
            ClockSample sample = Exchange(filter, 5000000, 2000000, 300000, 2000000);
            Assert.AreEqual(Offset, sample.OffsetNs);
            Assert.AreEqual(4000000, sample.DelayNs);
            Assert.AreEqual(Offset, filter.OffsetNs);
            Assert.AreEqual(12345 + Offset, filter.ToSession(12345));
            Assert.AreEqual(12345, filter.ToLocal(12345 + Offset));
        }

        [Test]
        public void TheLeastDelayedSamplesWinAndTheErrorIsWithinHalfTheirRoundTrip()
        {
            var filter = new ClockFilter(16, 3);
            // Slow, lopsided samples (8 ms up, 1 ms down: 3.5 ms off each) and three fast ones.
            for (int k = 0; k < 10; k++) Exchange(filter, 1000000000L * k, 8000000, 0, 1000000);
            Exchange(filter, 20000000000L, 300000, 0, 100000);
            Exchange(filter, 21000000000L, 100000, 0, 300000);
            Exchange(filter, 22000000000L, 200000, 0, 200000);
            Assert.AreEqual(400000, filter.DelayNs);
            Assert.LessOrEqual(System.Math.Abs(filter.OffsetNs - Offset), 400000 / 2);
            Assert.AreEqual(Offset, filter.OffsetNs, "the three fast samples' errors cancel");
        }

        [Test]
        public void TheWindowKeepsTheNewestSamples()
        {
            var filter = new ClockFilter(4, 1);
            Exchange(filter, 0, 10, 0, 10); // the best, but it will leave the window
            for (int k = 1; k <= 4; k++) Exchange(filter, 1000000L * k, 1000, 0, 1000);
            Assert.AreEqual(4, filter.Samples.Count);
            Assert.AreEqual(2000, filter.DelayNs);
        }

        [Test]
        public void ANewEpochStartsAfreshAndTheRateScalesTime()
        {
            var filter = new ClockFilter();
            Exchange(filter, 0, 1000, 0, 1000);
            Exchange(filter, 1000000, 1000, 0, 1000);
            Assert.AreEqual(2, filter.Samples.Count);
            // A replay at twice the speed, after a seek: local 1 s is 2 s of session time.
            filter.Add(10000000000L, 50000000000L, 50000000000L, 10000000000L, 2.0, 1);
            Assert.AreEqual(1, filter.Samples.Count);
            Assert.AreEqual(1UL, filter.Epoch);
            Assert.AreEqual(2.0, filter.Rate);
            Assert.AreEqual(52000000000L, filter.ToSession(11000000000L));
            Assert.AreEqual(11000000000L, filter.ToLocal(52000000000L));
        }

        [Test]
        public void APausedClockHasNoLocalTime()
        {
            var filter = new ClockFilter();
            filter.Add(0, 7000, 7000, 100, 0.0, 3);
            Assert.AreEqual(7000, filter.ToSession(123456789), "paused: every local time is the same session time");
            Assert.Throws<ClockException>(() => filter.ToLocal(7000));
        }

        [Test]
        public void NothingIsAnsweredBeforeTheFirstSample()
        {
            var filter = new ClockFilter();
            Assert.IsFalse(filter.IsSynced);
            Assert.Throws<ClockException>(() => { long unused = filter.OffsetNs; });
            Assert.Throws<ClockException>(() => filter.ToSession(0));
            Assert.AreEqual(0, filter.DelayNs);
        }

        [Test]
        public void MidpointsAndMeansAreFloorDivisionsWithoutOverflow()
        {
            Assert.AreEqual(-2, ClockFilter.FloorMid(-3, 0), "(-3 + 0) // 2");
            Assert.AreEqual(-1, ClockFilter.FloorMid(-1, 0));
            Assert.AreEqual(long.MaxValue - 1, ClockFilter.FloorMid(long.MaxValue, long.MaxValue - 2), "no overflow near 2^63");
            Assert.AreEqual(-4, ClockFilter.FloorDiv(-7, 2));
            Assert.AreEqual(3, ClockFilter.FloorDiv(7, 2));
            Assert.AreEqual(-4, ClockFilter.FloorDiv(7, -2));
        }

        [Test]
        public void SharedVectorsTheSdksEstimates()
        {
            List<object> scenarios = J.Arr(Vectors.Load("clock_filter.json"), "scenarios");
            Assert.GreaterOrEqual(scenarios.Count, 5);
            int steps = 0, refused = 0, epochs = 0;
            foreach (object scenario in scenarios)
            {
                var filter = new ClockFilter((int)J.Long(scenario, "window"), (int)J.Long(scenario, "best"));
                int k = 0;
                foreach (object step in J.Arr(scenario, "steps"))
                {
                    string where = "scenario " + J.Long(scenario, "seed") + " (" + J.Str(scenario, "kind") + "), step " + k++;
                    object x = J.At(step, "exchange");
                    ulong? before = filter.Epoch;
                    ClockSample sample = filter.Add(J.Long(x, "t1"), J.Long(x, "t2"), J.Long(x, "t3"), J.Long(x, "t4"), J.Num(x, "rate"), (ulong)J.Long(x, "epoch"));
                    if (before.HasValue && before != filter.Epoch) epochs++;
                    object s = J.At(step, "sample");
                    Assert.AreEqual(J.Long(s, "local_mid_ns"), sample.LocalMidNs, where + ": local midpoint");
                    Assert.AreEqual(J.Long(s, "session_mid_ns"), sample.SessionMidNs, where + ": session midpoint");
                    Assert.AreEqual(J.Long(s, "delay_ns"), sample.DelayNs, where + ": delay");
                    Assert.AreEqual(J.Long(s, "offset_ns"), sample.OffsetNs, where + ": sample offset");
                    Assert.AreEqual(J.Long(step, "samples_held"), filter.Samples.Count, where + ": samples held");
                    Assert.AreEqual(J.Long(step, "offset_ns"), filter.OffsetNs, where + ": offset");
                    Assert.AreEqual(J.Long(step, "delay_ns"), filter.DelayNs, where + ": least delay");
                    Assert.AreEqual(J.Num(step, "rate"), filter.Rate, where + ": rate");
                    Assert.AreEqual(J.Long(step, "epoch"), (long)filter.Epoch.Value, where + ": epoch");
                    foreach (object pair in J.Arr(step, "to_session"))
                    {
                        List<object> p = J.Arr(pair);
                        Assert.AreEqual(J.Long(p[1]), filter.ToSession(J.Long(p[0])), where + ": to_session(" + p[0] + ")");
                    }
                    foreach (object pair in J.Arr(step, "to_local"))
                    {
                        List<object> p = J.Arr(pair);
                        if (p[1] == null)
                        {
                            Assert.Throws<ClockException>(() => filter.ToLocal(J.Long(p[0])), where + ": to_local refused");
                            refused++;
                        }
                        else
                        {
                            Assert.AreEqual(J.Long(p[1]), filter.ToLocal(J.Long(p[0])), where + ": to_local(" + p[0] + ")");
                        }
                    }
                    steps++;
                }
            }
            Assert.Greater(steps, 50);
            Assert.Greater(refused, 0, "a paused clock is in the vectors");
            Assert.Greater(epochs, 1, "seeks are in the vectors");
        }
    }
}

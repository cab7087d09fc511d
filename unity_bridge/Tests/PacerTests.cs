// Pacer.cs: the web page's Paced and moved() (holo/web/src/immersive.js, and its node
// tests in holo/web/test/headset.test.mjs), driven here by made-up times: no clock, no wait.
using System;
using System.Collections.Generic;
using NUnit.Framework;

namespace Holo.Bridge.Core.Tests
{
    [TestFixture]
    public class PacerTests
    {
        static Pose At(double x, double degreesAboutY = 0)
        {
            double half = degreesAboutY * Math.PI / 360.0;
            return new Pose(new Vec3(x, 1.6, 0), new Quat(0, Math.Sin(half), 0, Math.Cos(half)));
        }

        [Test]
        public void KeepsToItsRateAndSendsTheNewestValueOneCallAtATime()
        {
            // 90 offers a second (a headset's frame rate) for a second; each call takes 5 ms.
            var pacer = new Pacer<int>(30);
            var sent = new List<KeyValuePair<double, int>>();
            double doneAt = double.PositiveInfinity;
            for (int frame = 0; frame <= 110; frame++)
            {
                double now = frame / 90.0;
                if (now >= doneAt)
                {
                    pacer.Done();
                    doneAt = double.PositiveInfinity;
                }
                if (frame < 90) pacer.Offer(frame);
                int value;
                if (pacer.TryTake(now, out value))
                {
                    Assert.IsTrue(double.IsPositiveInfinity(doneAt), "a second call while one is in flight");
                    sent.Add(new KeyValuePair<double, int>(now, value));
                    doneAt = now + 0.005;
                }
            }
            Assert.LessOrEqual(sent.Count, 31 + 1);
            Assert.GreaterOrEqual(sent.Count, 15);
            for (int k = 1; k < sent.Count; k++)
            {
                Assert.GreaterOrEqual(sent[k].Key - sent[k - 1].Key, 1 / 30.0, "two sends closer than 1/30 s");
                Assert.Greater(sent[k].Value, sent[k - 1].Value, "an older value after a newer");
                // The value sent is the newest offered at that frame.
                Assert.AreEqual(Math.Min(89, (int)Math.Round(sent[k].Key * 90)), sent[k].Value);
            }
            Assert.AreEqual(89, sent[sent.Count - 1].Value, "the last value offered is sent");
            Assert.AreEqual(sent.Count, pacer.Taken);
        }

        [Test]
        public void AValueWaitsForTheCallInFlightAndTheNewestWins()
        {
            var pacer = new Pacer<string>(10);
            string value;
            Assert.IsFalse(pacer.TryTake(0, out value), "nothing offered");
            pacer.Offer("a");
            Assert.IsTrue(pacer.TryTake(0, out value));
            Assert.AreEqual("a", value);
            pacer.Offer("b");
            pacer.Offer("c");
            Assert.IsFalse(pacer.TryTake(0.05, out value), "too soon");
            Assert.AreEqual(0.05, pacer.WaitS(0.05), 1e-12);
            Assert.IsFalse(pacer.TryTake(5, out value), "the call in flight has not ended");
            pacer.Done();
            Assert.AreEqual(0, pacer.WaitS(5));
            Assert.IsTrue(pacer.TryTake(5, out value));
            Assert.AreEqual("c", value, "the newest value goes; b never does");
            pacer.Done();
            Assert.IsFalse(pacer.Waiting);
            Assert.IsFalse(pacer.TryTake(10, out value), "nothing new offered");
        }

        [Test]
        public void SettleDropsWhatWaitsAndSaysWhetherACallIsInFlight()
        {
            var pacer = new Pacer<string>(1);
            string value;
            pacer.Offer("first");
            Assert.IsTrue(pacer.TryTake(0, out value));
            pacer.Offer("dropped"); // waits for the 1 s pace
            Assert.IsTrue(pacer.Settle(), "the first call is still in flight: wait for it before committing");
            pacer.Done();
            Assert.IsFalse(pacer.TryTake(10, out value), "a settled value never goes");
            Assert.IsFalse(pacer.Settle(), "nothing in flight");
            Assert.AreEqual(1, pacer.Taken);
            pacer.Offer("next drag");
            Assert.IsTrue(pacer.TryTake(10, out value));
            Assert.AreEqual("next drag", value);
        }

        [Test]
        public void StillPosesAreNotOfferedAndDriftCountsFromTheLastAccepted()
        {
            var pacer = new Pacer<Pose>(30, Stillness.Still);
            Assert.IsTrue(pacer.Offer(At(0)), "the first pose");
            Assert.IsFalse(pacer.Offer(At(0.0009)), "0.9 mm: noise");
            Assert.IsTrue(pacer.Offer(At(0.0011)), "1.1 mm from the last accepted");
            Assert.IsFalse(pacer.Offer(At(0.0011, 0.15)), "0.15 degrees: noise");
            Assert.IsTrue(pacer.Offer(At(0.0011, 0.25)), "0.25 degrees");
            // A slow drift of 0.4 mm a frame goes out once it adds up to more than 1 mm.
            var accepted = new List<bool>();
            for (int k = 1; k <= 3; k++) accepted.Add(pacer.Offer(At(0.0011 + 0.0004 * k, 0.25)));
            CollectionAssert.AreEqual(new[] { false, false, true }, accepted);
            Pose value;
            Assert.IsTrue(pacer.TryTake(0, out value));
            Vectors.AssertVec(new Vec3(0.0023, 1.6, 0), value.Position, 1e-15, "the newest accepted pose");
            pacer.Done();
            pacer.Settle();
            Assert.IsTrue(pacer.Offer(At(0.0023, 0.25)), "after a settle the first pose counts again");
        }

        [Test]
        public void StillnessIsBlindToFloatQuaternionsThatAreNotQuiteUnit()
        {
            // Unity's quaternions are floats, unit to about 1e-7: acos of their dot would
            // read that as a turn of 0.03 degrees.
            Pose a = At(0, 10);
            var scaled = new Pose(a.Position, new Quat(a.Rotation.X * (1 + 3e-7), a.Rotation.Y * (1 + 3e-7), a.Rotation.Z * (1 + 3e-7), a.Rotation.W * (1 + 3e-7)));
            Assert.IsTrue(Stillness.Still(a, scaled));
            Assert.IsTrue(Stillness.Moved(At(0, 10), At(0, 10.21)));
            Assert.IsTrue(Stillness.Still(At(0, 10), At(0, 10.19)));
            Pose negated = new Pose(a.Position, new Quat(-a.Rotation.X, -a.Rotation.Y, -a.Rotation.Z, -a.Rotation.W));
            Assert.IsTrue(Stillness.Still(a, negated), "q and -q are one rotation");
        }

        [Test]
        public void StillRaysAreNotOffered()
        {
            double turned = 0.15 * Math.PI / 180.0;
            var ray = new Ray(new Vec3(0, 1.5, 0), new Vec3(0, 0, -2)); // not unit length
            var pacer = new Pacer<Ray>(20, Stillness.Still);
            Assert.IsTrue(pacer.Offer(ray));
            Assert.IsFalse(pacer.Offer(new Ray(new Vec3(0.0009, 1.5, 0), ray.Direction)), "origin 0.9 mm");
            Assert.IsFalse(pacer.Offer(new Ray(ray.Origin, new Vec3(Math.Sin(turned), 0, -Math.Cos(turned)))), "0.15 degrees");
            Assert.IsTrue(pacer.Offer(new Ray(ray.Origin, new Vec3(Math.Sin(2 * turned), 0, -Math.Cos(2 * turned)))), "0.3 degrees");
            Assert.IsTrue(Stillness.Moved(ray, new Ray(new Vec3(0, 1.5011, 0), ray.Direction)), "origin 1.1 mm");
        }

        [Test]
        public void MisuseIsRefusedWithAReason()
        {
            var error = Assert.Throws<ArgumentOutOfRangeException>(() => new Pacer<int>(0));
            StringAssert.Contains("positive, finite", error.Message);
            Assert.Throws<ArgumentOutOfRangeException>(() => new Pacer<int>(double.NaN));
            var pacer = new Pacer<int>(30);
            StringAssert.Contains("once for each value", Assert.Throws<InvalidOperationException>(() => pacer.Done()).Message);
        }
    }
}

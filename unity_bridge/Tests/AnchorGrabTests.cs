// AnchorGrab.cs: the model rides the hand rigidly (anchor = hand * inverse(hand at grab) *
// anchor at grab), by rule and against tests/vectors/grab.json (expected anchors composed
// as matrices by the Python generator, not by this quaternion algebra).
using System;
using System.Collections.Generic;
using NUnit.Framework;

namespace Holo.Bridge.Core.Tests
{
    [TestFixture]
    public class AnchorGrabTests
    {
        static readonly Random Rng = new Random(23);

        static Quat About(Vec3 axis, double degrees)
        {
            double half = degrees * Math.PI / 360.0, s = Math.Sin(half) / axis.Length;
            return new Quat(axis.X * s, axis.Y * s, axis.Z * s, Math.Cos(half));
        }

        static Quat RandomRotation()
        {
            return new Quat(Rng.NextDouble() * 2 - 1, Rng.NextDouble() * 2 - 1, Rng.NextDouble() * 2 - 1, Rng.NextDouble() * 2 - 1).Normalized();
        }

        static Vec3 RandomVec(double size) { return new Vec3((Rng.NextDouble() * 2 - 1) * size, (Rng.NextDouble() * 2 - 1) * size, (Rng.NextDouble() * 2 - 1) * size); }

        /// <summary>Poses equal within 1e-12 per component, q and -q being one rotation.</summary>
        static void AssertSamePose(Pose expected, Pose actual, string where)
        {
            Quat e = expected.Rotation, a = actual.Rotation;
            if (e.X * a.X + e.Y * a.Y + e.Z * a.Z + e.W * a.W < 0) a = new Quat(-a.X, -a.Y, -a.Z, -a.W);
            Vectors.AssertPose(expected, new Pose(actual.Position, a), 1e-12, where);
        }

        [Test]
        public void APureTranslationMovesTheAnchorByTheHandsStep()
        {
            var hand = new Pose(new Vec3(0.1, 1.2, -0.3), About(new Vec3(1, 2, 0), 40));
            var anchor = new Pose(new Vec3(0.3, 1.0, -0.6), About(new Vec3(0, 1, 0), -70));
            var grab = new AnchorGrab("knee", hand, anchor);
            var step = new Vec3(0.05, -0.02, 0.1);
            Assert.IsTrue(grab.Move(new Pose(hand.Position + step, hand.Rotation)));
            AssertSamePose(new Pose(anchor.Position + step, anchor.Rotation), grab.Anchor, "translated");
            Assert.IsTrue(grab.HasMoved);
        }

        [Test]
        public void ATurnOfTheHandAboutItsOwnOriginSwingsTheModelAboutTheHand()
        {
            // The model 30 cm along +X of the hand; the hand turns a quarter about +Y
            // (right-handed: +X goes to -Z): the model swings to 30 cm along -Z, turned too.
            var hand = new Pose(new Vec3(0, 1, 0), Quat.Identity);
            var anchor = new Pose(new Vec3(0.3, 1, 0), Quat.Identity);
            var grab = new AnchorGrab("knee", hand, anchor);
            Quat quarter = About(new Vec3(0, 1, 0), 90);
            Assert.IsTrue(grab.Move(new Pose(hand.Position, quarter)));
            AssertSamePose(new Pose(new Vec3(0, 1, -0.3), quarter), grab.Anchor, "swung");
            // Any point of the model keeps its distance to the hand and its place on it.
            for (int k = 0; k < 50; k++)
            {
                var handNow = new Pose(RandomVec(1), RandomRotation());
                Pose anchorNow = grab.AnchorFor(handNow);
                Vec3 p = RandomVec(0.2);
                Vectors.AssertVec(anchor.TransformPoint(p) - hand.Position, handNow.Rotation.Conjugate().Rotate(anchorNow.TransformPoint(p) - handNow.Position), 1e-12, "point " + k + " on the hand");
            }
        }

        [Test]
        public void AReleaseWithoutMotionCommitsNothing()
        {
            var hand = new Pose(new Vec3(0, 1, 0), About(new Vec3(0, 0, 1), 15));
            var grab = new AnchorGrab("knee", hand, new Pose(new Vec3(0.2, 1.1, 0.1), Quat.Identity));
            Assert.IsFalse(grab.Move(new Pose(hand.Position + new Vec3(0.0004, 0, 0), hand.Rotation)), "0.4 mm: a held hand's jitter");
            Assert.IsFalse(grab.Move(new Pose(hand.Position, hand.Rotation * About(new Vec3(1, 0, 0), 0.05))), "0.05 degrees with a 22 cm lever");
            Assert.IsFalse(grab.HasMoved);
            Assert.IsNull(grab.Release());
            Assert.IsTrue(grab.Released);
            Assert.IsNull(new AnchorGrab("knee", hand, Pose.Identity).Release(), "grabbed and let go at once");
        }

        [Test]
        public void AReleaseCommitsTheLastAnchorShown()
        {
            var hand = new Pose(new Vec3(0, 1, 0), Quat.Identity);
            var anchor = new Pose(new Vec3(0, 1, -0.4), Quat.Identity);
            var grab = new AnchorGrab("knee", hand, anchor);
            Assert.IsTrue(grab.Move(new Pose(new Vec3(0.05, 1, 0), Quat.Identity)));
            Pose shown = grab.Anchor;
            Assert.IsFalse(grab.Move(new Pose(new Vec3(0.0503, 1, 0), Quat.Identity)), "then noise");
            Pose? committed = grab.Release();
            Assert.IsTrue(committed.HasValue);
            Assert.AreEqual(shown, committed.Value, "what the wearer sees is what is committed");
            Assert.AreEqual("knee", grab.ModelId);
            var error = Assert.Throws<InvalidOperationException>(() => grab.Move(hand));
            StringAssert.Contains("start a new grab", error.Message);
        }

        [Test]
        public void TheSameGrabInUnitysFrameCommitsTheSamePose()
        {
            // The Unity layer could compose in Unity's left-handed frame and convert the
            // result, or convert each pose and compose in glTF: the commit is the same.
            for (int k = 0; k < 100; k++)
            {
                var hand0 = new Pose(RandomVec(1), RandomRotation());
                var anchor0 = new Pose(hand0.Position + RandomVec(0.5), RandomRotation());
                var hand = new Pose(hand0.Position + RandomVec(0.2), RandomRotation());
                var gltf = new AnchorGrab("knee", hand0, anchor0);
                var unity = new AnchorGrab("knee", Frames.ToUnity(hand0), Frames.ToUnity(anchor0));
                Assert.AreEqual(gltf.Move(hand), unity.Move(Frames.ToUnity(hand)), "moved, case " + k);
                Pose? inGltf = gltf.Release(), inUnity = unity.Release();
                Assert.AreEqual(inGltf.HasValue, inUnity.HasValue, "committed, case " + k);
                if (inGltf.HasValue) AssertSamePose(inGltf.Value, Frames.ToGltf(inUnity.Value), "case " + k);
            }
        }

        [Test]
        public void BadPosesAreRefusedWithAReason()
        {
            StringAssert.Contains("model id is empty", Assert.Throws<ArgumentException>(() => new AnchorGrab("", Pose.Identity, Pose.Identity)).Message);
            Assert.Throws<ArgumentException>(() => new AnchorGrab("knee", new Pose(Vec3.Zero, new Quat(0, 0, 0, 0)), Pose.Identity));
            var grab = new AnchorGrab("knee", Pose.Identity, Pose.Identity);
            StringAssert.Contains("finite", Assert.Throws<ArgumentException>(() => grab.Move(new Pose(new Vec3(double.NaN, 0, 0), Quat.Identity))).Message);
            // A hand quaternion a little off unit length (floats) moves nothing by its norm.
            Assert.IsFalse(grab.Move(new Pose(Vec3.Zero, new Quat(0, 0, 0, 1.0000003))));
        }

        [Test]
        public void SharedVectorsGrab()
        {
            object vectors = Vectors.Load("grab.json");
            Assert.AreEqual(Stillness.Metres, J.Num(vectors, "still_metres"));
            Assert.AreEqual(Stillness.Degrees, J.Num(vectors, "still_degrees"));
            List<object> cases = J.Arr(vectors, "cases");
            Assert.GreaterOrEqual(cases.Count, 8);
            int commits = 0;
            foreach (object c in cases)
            {
                string name = J.Str(c, "name");
                Pose hand0 = J.Pose(J.At(c, "hand_at_grab")), anchor0 = J.Pose(J.At(c, "anchor_at_grab"));
                var grab = new AnchorGrab("knee", hand0, anchor0);
                // The same grab done in Unity's frame, its poses converted by Frames.
                var unity = new AnchorGrab("knee", Frames.ToUnity(hand0), Frames.ToUnity(anchor0));
                int k = 0;
                foreach (object step in J.Arr(c, "steps"))
                {
                    Pose hand = J.Pose(J.At(step, "hand"));
                    string where = name + ", step " + k++;
                    AssertSamePose(J.Pose(J.At(step, "anchor")), grab.AnchorFor(hand), where);
                    Assert.AreEqual(J.Bool(step, "moved"), grab.Move(hand), where + ": moved");
                    Assert.AreEqual(J.Bool(step, "moved"), unity.Move(Frames.ToUnity(hand)), where + ": moved, in Unity's frame");
                }
                Pose? committed = grab.Release(), committedInUnity = unity.Release();
                object expected = J.At(c, "commit");
                Assert.AreEqual(expected != null, committed.HasValue, name + ": commits");
                Assert.AreEqual(expected != null, committedInUnity.HasValue, name + ": commits, in Unity's frame");
                if (expected == null) continue;
                commits++;
                AssertSamePose(J.Pose(expected), committed.Value, name + ": commit");
                AssertSamePose(J.Pose(expected), Frames.ToGltf(committedInUnity.Value), name + ": commit, in Unity's frame");
            }
            Assert.Less(commits, cases.Count, "a case commits nothing");
        }
    }
}

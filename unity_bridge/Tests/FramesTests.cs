// Frames.cs: glTF <-> Unity by glTFast's rule, checked by properties and against
// tests/vectors/frames.json (expected values from the mirror matrix, not the rule).
using System;
using System.Collections.Generic;
using NUnit.Framework;

namespace Holo.Bridge.Core.Tests
{
    [TestFixture]
    public class FramesTests
    {
        static readonly Random Rng = new Random(17);

        static Quat RandomRotation()
        {
            var q = new Quat(Rng.NextDouble() * 2 - 1, Rng.NextDouble() * 2 - 1, Rng.NextDouble() * 2 - 1, Rng.NextDouble() * 2 - 1);
            return q.Normalized();
        }

        static Vec3 RandomVec() { return new Vec3(Rng.NextDouble() * 4 - 2, Rng.NextDouble() * 4 - 2, Rng.NextDouble() * 4 - 2); }

        static Vec3 Mirror(Vec3 v) { return new Vec3(-v.X, v.Y, v.Z); }

        [Test]
        public void PositionsNegateXAndRotationsNegateYAndZ()
        {
            Pose unity = Frames.ToUnity(new Pose(new Vec3(1, 2, 3), new Quat(0.1, 0.2, 0.3, 0.9)));
            Assert.AreEqual(new Vec3(-1, 2, 3), unity.Position);
            Assert.AreEqual(new Quat(0.1, -0.2, -0.3, 0.9), unity.Rotation);
        }

        [Test]
        public void TheRoundTripGivesBackTheSameBits()
        {
            for (int k = 0; k < 200; k++)
            {
                var pose = new Pose(RandomVec(), RandomRotation());
                Assert.AreEqual(pose, Frames.ToGltf(Frames.ToUnity(pose)));
                Assert.AreEqual(pose, Frames.ToUnity(Frames.ToGltf(pose)));
                var ray = new Ray(RandomVec(), RandomVec());
                Assert.AreEqual(ray, Frames.ToGltf(Frames.ToUnity(ray)));
            }
        }

        [Test]
        public void AConvertedPosePlacesMirroredPointsWhereTheMirroredWorldIs()
        {
            // The property glTFast's import and the bridge's poses must share: a model point
            // p placed by anchor A in glTF, mirrored, is where the mirrored point lands under
            // the converted anchor.
            for (int k = 0; k < 200; k++)
            {
                var anchor = new Pose(RandomVec(), RandomRotation());
                Vec3 p = RandomVec();
                Vec3 expected = Mirror(anchor.TransformPoint(p));
                Vec3 actual = Frames.ToUnity(anchor).TransformPoint(Frames.ToUnity(p));
                Vectors.AssertVec(expected, actual, 1e-12, "pose " + k);
            }
        }

        [Test]
        public void ConversionCommutesWithComposition()
        {
            // A head pose in the room, seen from the model (anchor^-1 * head), converts the
            // same whether composed before or after: no frame is converted twice.
            for (int k = 0; k < 100; k++)
            {
                var anchor = new Pose(RandomVec(), RandomRotation());
                var head = new Pose(RandomVec(), RandomRotation());
                Pose before = Frames.ToUnity(anchor.Inverse() * head);
                Pose after = Frames.ToUnity(anchor).Inverse() * Frames.ToUnity(head);
                Vectors.AssertVec(before.Position, after.Position, 1e-12, "position " + k);
                Assert.Less(Quat.Angle(before.Rotation, after.Rotation), 1e-7, "rotation " + k);
            }
        }

        [Test]
        public void RaysConvertOriginAsAPointAndDirectionAsAVector()
        {
            var ray = new Ray(new Vec3(0.5, 1.5, -2), new Vec3(0.3, -0.2, -1));
            Ray unity = Frames.ToUnity(ray);
            Assert.AreEqual(new Vec3(-0.5, 1.5, -2), unity.Origin);
            Assert.AreEqual(new Vec3(-0.3, -0.2, -1), unity.Direction);
        }

        [Test]
        public void AZeroRotationIsRefusedWhenNormalised()
        {
            var error = Assert.Throws<ArgumentException>(() => new Quat(0, 0, 0, 0).Normalized());
            StringAssert.Contains("non-zero, finite quaternion", error.Message);
            Assert.Throws<ArgumentException>(() => new Quat(double.NaN, 0, 0, 1).Normalized());
        }

        [Test]
        public void SharedVectorsPoses()
        {
            object vectors = Vectors.Load("frames.json");
            List<object> poses = J.Arr(vectors, "poses");
            Assert.GreaterOrEqual(poses.Count, 40);
            int k = 0;
            foreach (object c in poses)
            {
                Pose gltf = J.Pose(J.At(c, "gltf"));
                Pose expected = J.Pose(J.At(c, "unity"));
                Pose unity = Frames.ToUnity(gltf);
                Vectors.AssertPose(expected, unity, 1e-12, "pose " + k);
                Vec3 world = Frames.ToUnity(gltf).TransformPoint(Frames.ToUnity(J.Vec3(J.At(c, "point_gltf"))));
                Vectors.AssertVec(J.Vec3(J.At(c, "world_unity")), world, 1e-12, "world point of pose " + k);
                Vectors.AssertPose(gltf, Frames.ToGltf(expected), 1e-12, "back to glTF, pose " + k);
                k++;
            }
        }

        [Test]
        public void SharedVectorsRays()
        {
            object vectors = Vectors.Load("frames.json");
            List<object> rays = J.Arr(vectors, "rays");
            Assert.GreaterOrEqual(rays.Count, 10);
            foreach (object c in rays)
            {
                var gltf = new Ray(J.Vec3(J.At(J.At(c, "gltf"), "origin")), J.Vec3(J.At(J.At(c, "gltf"), "direction")));
                Ray unity = Frames.ToUnity(gltf);
                Vectors.AssertVec(J.Vec3(J.At(J.At(c, "unity"), "origin")), unity.Origin, 0, "origin");
                Vectors.AssertVec(J.Vec3(J.At(J.At(c, "unity"), "direction")), unity.Direction, 0, "direction");
            }
        }
    }
}

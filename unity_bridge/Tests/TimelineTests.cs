// SessionTimeline.cs and FrameSync.cs: the state as of a moment, by its rules and against
// what the Python SDK's SessionTimeline and FrameSync answered (tests/vectors/timeline.json),
// interpolated values to the last bit.
using System;
using System.Collections.Generic;
using NUnit.Framework;

namespace Holo.Bridge.Core.Tests
{
    [TestFixture]
    public class TimelineTests
    {
        const long Ms = 1000000;

        static SessionState Start()
        {
            var state = new SessionState { Seq = 2, Controller = "p" };
            state.Participants.Set("p", new Participant("p", Roles.Presenter, "P"));
            state.Models.Set("m", new SceneModel("m", Pose.Identity));
            return state;
        }

        static Pose At(double x) { return new Pose(new Vec3(x, 0, 0), Quat.Identity); }

        static SessionEvent Commit(long seq, long t, double x)
        {
            return SessionEvent.ForModel(EventKinds.AnchorCommitted, seq, t, "p", new SceneModel("m", At(x)));
        }

        [Test]
        public void EventsFoldInTimeOrderNotSeqOrder()
        {
            var timeline = new SessionTimeline();
            timeline.Reset(Start(), 100 * Ms);
            timeline.OnEvent(Commit(3, 300 * Ms, 3));
            timeline.OnEvent(Commit(4, 200 * Ms, 4)); // back-dated: happened before seq 3
            Assert.AreEqual(4.0, timeline.StateAtTime(250 * Ms).State.Models.Get("m").AnchorPose.Position.X);
            Assert.AreEqual(3.0, timeline.StateAtTime(300 * Ms).State.Models.Get("m").AnchorPose.Position.X);
            Assert.AreEqual(0.0, timeline.StateAtTime(150 * Ms).State.Models.Get("m").AnchorPose.Position.X);
            Assert.AreEqual(300 * Ms, timeline.StateAtTime(400 * Ms).State.Models.Get("m").TNs, "the commit time is kept");
        }

        [Test]
        public void BeforeTheSnapshotTheAnswerIsNotExact()
        {
            var timeline = new SessionTimeline();
            timeline.Reset(Start(), 100 * Ms);
            Assert.IsFalse(timeline.StateAtTime(99 * Ms).Exact);
            Assert.IsTrue(timeline.StateAtTime(100 * Ms).Exact);
            Assert.AreEqual(2, timeline.StateAtTime(0).State.Seq, "the oldest state held");
        }

        [Test]
        public void ALiveDragNewerThanTheCommitWins()
        {
            var timeline = new SessionTimeline();
            timeline.Reset(Start(), 0);
            timeline.OnEvent(Commit(3, 100 * Ms, 1));
            timeline.OnEphemeral(EphemeralUpdate.ForDrag("p", 150 * Ms, new SceneModel("m", At(2))));
            Assert.AreEqual(1.0, timeline.StateAtTime(120 * Ms).AnchorPose("m").Value.Position.X);
            Assert.AreEqual(2.0, timeline.StateAtTime(160 * Ms).AnchorPose("m").Value.Position.X);
            timeline.OnEvent(Commit(4, 200 * Ms, 3)); // the drag ends in a commit
            Assert.AreEqual(3.0, timeline.StateAtTime(210 * Ms).AnchorPose("m").Value.Position.X);
            Assert.IsNull(timeline.StateAtTime(210 * Ms).AnchorPose("other"));
        }

        [Test]
        public void AnOlderEphemeralValueThanOneHeldIsSkipped()
        {
            var timeline = new SessionTimeline();
            timeline.Reset(Start(), 0);
            timeline.OnEphemeral(EphemeralUpdate.ForHeadPose("p", 200 * Ms, At(2)));
            timeline.OnEphemeral(EphemeralUpdate.ForHeadPose("p", 100 * Ms, At(1)));
            Assert.IsNull(timeline.StateAtTime(150 * Ms).Latest("p", Channels.HeadPose));
            Assert.AreEqual(200 * Ms, timeline.StateAtTime(250 * Ms).Latest("p", Channels.HeadPose).TNs);
        }

        [Test]
        public void WhatFallsOutOfTheHorizonIsFoldedIntoTheBase()
        {
            var timeline = new SessionTimeline(1000 * Ms);
            timeline.Reset(Start(), 0);
            for (int k = 0; k < 10; k++) timeline.OnEvent(Commit(3 + k, (k + 1) * 500 * Ms, k));
            // As in Python, events leave only when two or more are past the horizon: after
            // the last (5 s) the one at 3.5 s stays, and the base is the state as of 3 s.
            StateAt old = timeline.StateAtTime(1000 * Ms);
            Assert.IsFalse(old.Exact, "older than the horizon");
            Assert.AreEqual(8, old.State.Seq, "the base: the events up to 3 s folded");
            Assert.IsFalse(timeline.StateAtTime(2999 * Ms).Exact);
            Assert.IsTrue(timeline.StateAtTime(3000 * Ms).Exact);
            Assert.AreEqual(9, timeline.StateAtTime(3500 * Ms).State.Seq);
            StateAt recent = timeline.StateAtTime(4600 * Ms);
            Assert.IsTrue(recent.Exact);
            Assert.AreEqual(8.0, recent.State.Models.Get("m").AnchorPose.Position.X);
        }

        [Test]
        public void FramesWaitForTheJitterDelayAndComeWithTheirMomentsState()
        {
            var timeline = new SessionTimeline();
            timeline.Reset(Start(), 0);
            var sync = new FrameSync<long>(timeline, t => t, 250 * Ms, 3);
            sync.Push(100 * Ms);
            sync.Push(200 * Ms);
            timeline.OnEvent(Commit(3, 150 * Ms, 5));
            Assert.AreEqual(0, sync.Ready(349 * Ms).Count);
            List<KeyValuePair<long, StateAt>> ready = sync.Ready(450 * Ms);
            Assert.AreEqual(2, ready.Count);
            Assert.AreEqual(0.0, ready[0].Value.State.Models.Get("m").AnchorPose.Position.X, "the frame before the commit");
            Assert.AreEqual(5.0, ready[1].Value.State.Models.Get("m").AnchorPose.Position.X);
            for (int k = 0; k < 5; k++) sync.Push(k);
            Assert.AreEqual(2, sync.Dropped, "at most 3 held");
            Assert.AreEqual(3, sync.Drain().Count);
            sync.Push(long.MaxValue);
            Assert.AreEqual(1, sync.Drain().Count, "drain takes even the last moment of time");
        }

        static EphemeralUpdate Drag(long t, double x, string model = "m")
        {
            return EphemeralUpdate.ForDrag("p", t, new SceneModel(model, new Pose(new Vec3(x, 1, -0.5), Quat.Identity)));
        }

        static SessionTimeline With(params EphemeralUpdate[] updates)
        {
            var timeline = new SessionTimeline();
            timeline.Reset(Start(), 0);
            foreach (EphemeralUpdate u in updates) timeline.OnEphemeral(u);
            return timeline;
        }

        static double DragX(SessionTimeline timeline, long t)
        {
            return timeline.StateAtTime(t).Latest("p", Channels.Drag).Drag.AnchorPose.Position.X;
        }

        [Test]
        public void ADragBetweenTwoValuesIsInterpolated()
        {
            SessionTimeline timeline = With(Drag(0, 0), Drag(66 * Ms, 0.66), Drag(133 * Ms, 1.33));
            Assert.AreEqual(0.33, DragX(timeline, 33 * Ms), 1e-12);
            Assert.AreEqual(1.0, DragX(timeline, 100 * Ms), 1e-12);
            Assert.AreEqual(0.66, DragX(timeline, 66 * Ms), "exactly on a value: that value");
            Assert.AreEqual(0.66, DragX(With(Drag(0, 0), Drag(66 * Ms, 0.66)), 500 * Ms), "after the newest: held");
            Assert.IsNull(timeline.StateAtTime(-1).Latest("p", Channels.Drag), "before the first: none");
        }

        [Test]
        public void ValuesFurtherApartThanTheGapAreHeldAndInterpolationCanBeTurnedOff()
        {
            Assert.AreEqual(250 * Ms, SessionTimeline.DefaultMaxGapNs);
            Assert.AreEqual(0.0, DragX(With(Drag(0, 0), Drag(400 * Ms, 4)), 200 * Ms), "a pause of 400 ms");
            Assert.AreEqual(1.0, DragX(With(Drag(0, 0), Drag(250 * Ms, 2)), 125 * Ms), 1e-12, "exactly the gap");
            Assert.AreEqual(0.0, DragX(With(Drag(0, 0), Drag(250 * Ms + 1, 2)), 125 * Ms), "a nanosecond more");
            SessionTimeline wide = With(Drag(0, 0), Drag(400 * Ms, 4));
            wide.MaxGapNs = 500 * Ms;
            Assert.AreEqual(2.0, DragX(wide, 200 * Ms), 1e-12);
            var held = new SessionTimeline(interpolate: false);
            held.OnEphemeral(Drag(0, 0));
            held.OnEphemeral(Drag(66 * Ms, 0.66));
            Assert.AreEqual(0.0, DragX(held, 33 * Ms));
            Assert.AreEqual(0.0, DragX(With(Drag(0, 0), Drag(66 * Ms, 0.66, "other")), 33 * Ms), "another model: held");
        }

        [Test]
        public void TheInterpolatedValueKeepsTheOlderTime()
        {
            // A commit between two drag values still wins over the drag until the newer
            // value's time, as without interpolation.
            SessionState state = Start();
            var committed = new Pose(new Vec3(9, 9, 9), Quat.Identity);
            state.Models.Set("m", new SceneModel("m", committed, 40 * Ms));
            var timeline = new SessionTimeline();
            timeline.Reset(state, 0);
            timeline.OnEphemeral(Drag(0, 0));
            timeline.OnEphemeral(Drag(66 * Ms, 0.66));
            StateAt at = timeline.StateAtTime(50 * Ms);
            Assert.AreEqual(0, at.Latest("p", Channels.Drag).TNs);
            Assert.AreEqual(committed, at.AnchorPose("m").Value);
            Assert.AreEqual(0.66, timeline.StateAtTime(70 * Ms).AnchorPose("m").Value.Position.X, "past the newer drag");
        }

        [Test]
        public void RotationTakesTheShortWayAndStaysUnit()
        {
            double s = Math.Sin(Math.PI / 4), c = Math.Cos(Math.PI / 4); // 90 degrees about y
            EphemeralUpdate a = EphemeralUpdate.ForHeadPose("p", 0, Pose.Identity);
            EphemeralUpdate b = EphemeralUpdate.ForHeadPose("p", 100 * Ms, new Pose(Vec3.Zero, new Quat(0, s, 0, c)));
            EphemeralUpdate flipped = EphemeralUpdate.ForHeadPose("p", 100 * Ms, new Pose(Vec3.Zero, new Quat(0, -s, 0, -c)));
            Quat half = SessionTimeline.Between(a, b, 0.5).HeadPose.Rotation;
            Assert.AreEqual(1.0, half.Norm, 1e-12);
            Assert.AreEqual(45.0, Quat.Angle(Quat.Identity, half) * 180 / Math.PI, 1e-9, "nlerp halves a 90 degree turn exactly");
            Assert.AreEqual(half, SessionTimeline.Between(a, flipped, 0.5).HeadPose.Rotation, "-q is q: not the long way round");
        }

        [Test]
        public void RaysInterpolateAndCancellingDirectionsAreHeld()
        {
            EphemeralUpdate a = EphemeralUpdate.ForPointer("p", 0, new Ray(new Vec3(0, 1.6, 0), new Vec3(0, 0, -1)));
            EphemeralUpdate b = EphemeralUpdate.ForPointer("p", 100 * Ms, new Ray(new Vec3(0.2, 1.6, 0), new Vec3(1, 0, -1)));
            Ray mid = SessionTimeline.Between(a, b, 0.5).Pointer;
            Vectors.AssertVec(new Vec3(0.1, 1.6, 0), mid.Origin, 1e-12, "origin");
            Vectors.AssertVec(new Vec3(0.5, 0, -1), mid.Direction, 1e-12, "direction");
            EphemeralUpdate back = EphemeralUpdate.ForPointer("p", 100 * Ms, new Ray(new Vec3(0, 1.6, 0), new Vec3(0, 0, 1)));
            Assert.AreSame(a, SessionTimeline.Between(a, back, 0.5));
            EphemeralUpdate beat = EphemeralUpdate.ForHeartbeat("p", 0);
            Assert.AreSame(beat, SessionTimeline.Between(beat, EphemeralUpdate.ForHeartbeat("p", 100 * Ms), 0.5), "heartbeats: held");
            SessionTimeline timeline = With(
                EphemeralUpdate.ForHeadPose("q", 0, new Pose(new Vec3(0, 1.6, 0), Quat.Identity)),
                EphemeralUpdate.ForHeadPose("q", 100 * Ms, new Pose(new Vec3(1, 1.6, 0), Quat.Identity)));
            Assert.AreEqual(0.25, timeline.StateAtTime(25 * Ms).Latest("q", Channels.HeadPose).HeadPose.Position.X, 1e-12);
        }

        [Test]
        public void SharedVectorsTheSdksAnswers()
        {
            List<object> scenarios = J.Arr(Vectors.Load("timeline.json"), "scenarios");
            Assert.GreaterOrEqual(scenarios.Count, 6);
            int queries = 0, inexact = 0, dragsWon = 0, frames = 0, interpolated = 0, held = 0;
            foreach (object scenario in scenarios)
            {
                var timeline = new SessionTimeline(J.Long(scenario, "horizon_ns"), J.Bool(scenario, "interpolate"), J.Long(scenario, "max_gap_ns"));
                if (!timeline.Interpolate) held++;
                // The updates fed, by participant, channel and time: a value in an answer that
                // is none of them was interpolated.
                var fed = new Dictionary<string, EphemeralUpdate>();
                var sync = new FrameSync<long>(timeline, t => t, J.Long(scenario, "delay_ns"));
                int k = 0;
                foreach (object op in J.Arr(scenario, "ops"))
                {
                    string where = "scenario " + J.Long(scenario, "seed") + ", op " + k++;
                    switch (J.Str(op, "op"))
                    {
                        case "reset":
                            SessionSnapshot snapshot = Vectors.Snapshot(J.At(op, "snapshot"));
                            timeline.Reset(SessionState.FromSnapshot(snapshot), snapshot.TNs);
                            break;
                        case "event":
                            timeline.OnEvent(Vectors.Event(J.At(op, "event")));
                            break;
                        case "ephemeral":
                            EphemeralUpdate update = Vectors.Update(J.At(op, "update"));
                            timeline.OnEphemeral(update);
                            fed[update.ParticipantId + "\n" + update.Channel + "\n" + update.TNs] = update;
                            break;
                        case "push":
                            sync.Push(J.Long(op, "t_ns"));
                            break;
                        case "ready":
                        case "drain":
                            var got = J.Str(op, "op") == "ready" ? sync.Ready(J.Long(op, "now_ns")) : sync.Drain();
                            List<object> want = J.Arr(op, "expected");
                            Assert.AreEqual(want.Count, got.Count, where + ": frames ready");
                            for (int f = 0; f < want.Count; f++)
                            {
                                List<object> w = J.Arr(want[f]);
                                Assert.AreEqual(J.Long(w[0]), got[f].Key, where + ": frame time");
                                Assert.AreEqual(J.Long(w[1]), got[f].Value.State.Seq, where + ": its state's seq");
                                Assert.AreEqual((bool)w[2], got[f].Value.Exact, where + ": exact");
                                frames++;
                            }
                            break;
                        case "query":
                            StateAt at = timeline.StateAtTime(J.Long(op, "t_ns"));
                            CheckAnswer(J.At(op, "expected"), at, where, ref dragsWon);
                            foreach (EphemeralUpdate u in at.Ephemeral)
                            {
                                EphemeralUpdate given;
                                if (!fed.TryGetValue(u.ParticipantId + "\n" + u.Channel + "\n" + u.TNs, out given) || !SameValue(given, u)) interpolated++;
                            }
                            queries++;
                            if (!at.Exact) inexact++;
                            break;
                        default:
                            Assert.Fail(where + ": unknown op " + J.Str(op, "op"));
                            break;
                    }
                }
            }
            Assert.Greater(queries, 50);
            Assert.Greater(inexact, 5, "moments past the horizon are asked for");
            Assert.Greater(dragsWon, 0, "a live drag wins over a commit somewhere");
            Assert.Greater(frames, 20);
            Assert.Greater(interpolated, 300, "values between two are interpolated");
            Assert.AreEqual(1, held, "one scenario holds the newest value");
        }

        static bool SameValue(EphemeralUpdate a, EphemeralUpdate b)
        {
            if (a.Drag != null || b.Drag != null)
            {
                return a.Drag != null && b.Drag != null && a.Drag.ModelId == b.Drag.ModelId && a.Drag.AnchorPose.Equals(b.Drag.AnchorPose);
            }
            return a.HeadPose.Equals(b.HeadPose) && a.Pointer.Equals(b.Pointer);
        }

        /// <summary>A value in the layout of EphemeralUpdate.to_json's "value", exactly.</summary>
        static void CheckValue(object expected, EphemeralUpdate actual, string where)
        {
            switch (actual.Channel)
            {
                case Channels.HeadPose:
                    Vectors.AssertPose(J.Pose(J.At(expected, "head_pose")), actual.HeadPose, 0, where);
                    break;
                case Channels.Pointer:
                    Vectors.AssertVec(J.Vec3(J.At(expected, "origin")), actual.Pointer.Origin, 0, where + " (origin)");
                    Vectors.AssertVec(J.Vec3(J.At(expected, "direction")), actual.Pointer.Direction, 0, where + " (direction)");
                    break;
                case Channels.Drag:
                    Assert.AreEqual(J.Str(expected, "model_id"), actual.Drag.ModelId, where + " (model)");
                    Vectors.AssertPose(J.Pose(J.At(expected, "anchor_pose")), actual.Drag.AnchorPose, 0, where);
                    break;
                default:
                    Assert.AreEqual(0, J.Obj(expected).Count, where + ": a heartbeat has no value");
                    break;
            }
        }

        static void CheckAnswer(object expected, StateAt at, string where, ref int dragsWon)
        {
            SessionState state = at.State;
            Assert.AreEqual(J.Long(expected, "seq"), state.Seq, where + ": seq");
            Assert.AreEqual(J.Bool(expected, "exact"), at.Exact, where + ": exact");
            var participants = new List<string>();
            foreach (object p in J.Arr(expected, "participants"))
            {
                string pid = (string)J.Arr(p)[0];
                participants.Add(pid);
                Assert.AreEqual((bool)J.Arr(p)[1], state.Participants.Get(pid).Present, where + ": presence of " + pid);
            }
            CollectionAssert.AreEqual(participants, state.Participants.Keys, where + ": participants");
            var models = new List<string>();
            foreach (object m in J.Arr(expected, "models"))
            {
                List<object> item = J.Arr(m);
                string id = (string)item[0];
                models.Add(id);
                Vectors.AssertPose(J.Pose(item[1]), state.Models.Get(id).AnchorPose, 0, where + ": pose of " + id);
                Assert.AreEqual(J.Long(item[2]), state.Models.Get(id).TNs, where + ": commit time of " + id);
            }
            CollectionAssert.AreEqual(models, state.Models.Keys, where + ": models");
            CollectionAssert.AreEqual(Vectors.Strings(J.Arr(expected, "annotations")), state.Annotations.Keys, where + ": annotations");
            CollectionAssert.AreEqual(Vectors.Strings(J.Arr(expected, "telestrations")), state.Telestrations.Keys, where + ": telestrations");
            Assert.AreEqual(J.Str(expected, "controller"), state.Controller, where + ": controller");
            CollectionAssert.AreEqual(Vectors.Strings(J.Arr(expected, "control_requests")), state.ControlRequests, where + ": requests");
            List<object> ephemeral = J.Arr(expected, "ephemeral");
            Assert.AreEqual(ephemeral.Count, at.Ephemeral.Count, where + ": ephemeral values");
            for (int k = 0; k < ephemeral.Count; k++)
            {
                List<object> e = J.Arr(ephemeral[k]);
                Assert.AreEqual((string)e[0], at.Ephemeral[k].ParticipantId, where + ": ephemeral " + k);
                Assert.AreEqual((string)e[1], at.Ephemeral[k].Channel, where + ": ephemeral " + k);
                Assert.AreEqual(J.Long(e[2]), at.Ephemeral[k].TNs, where + ": ephemeral " + k);
                CheckValue(e[3], at.Ephemeral[k], where + ": value of ephemeral " + k);
            }
            foreach (object pair in J.Arr(expected, "anchor_poses"))
            {
                List<object> item = J.Arr(pair);
                string id = (string)item[0];
                Pose? pose = at.AnchorPose(id);
                if (item[1] == null)
                {
                    Assert.IsFalse(pose.HasValue, where + ": no anchor for " + id);
                    continue;
                }
                Vectors.AssertPose(J.Pose(item[1]), pose.Value, 0, where + ": anchor of " + id);
                SceneModel committed = state.Models.Get(id);
                if (committed == null || !committed.AnchorPose.Equals(pose.Value)) dragsWon++;
            }
        }
    }
}

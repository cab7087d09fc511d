// SessionTimeline.cs and FrameSync.cs: the state as of a moment, by its rules and against
// what the Python SDK's SessionTimeline and FrameSync answered (tests/vectors/timeline.json).
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

        [Test]
        public void SharedVectorsTheSdksAnswers()
        {
            List<object> scenarios = J.Arr(Vectors.Load("timeline.json"), "scenarios");
            Assert.GreaterOrEqual(scenarios.Count, 3);
            int queries = 0, inexact = 0, dragsWon = 0, frames = 0;
            foreach (object scenario in scenarios)
            {
                var timeline = new SessionTimeline(J.Long(scenario, "horizon_ns"));
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
                            timeline.OnEphemeral(Vectors.Update(J.At(op, "update")));
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
